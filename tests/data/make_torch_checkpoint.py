"""Writes the tiny torch.save() checkpoints that tests/io_torch_checkpoint_test.cpp reads.

Run once with Debian's python3-torch (1.13): /usr/bin/python3 tests/data/make_torch_checkpoint.py
The outputs are committed; rerun only to change them.
"""
import collections
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

weight = torch.arange(6).reshape(2, 3).float()
bias = torch.tensor([1.0, 2.0])

# (a) A plain state dict, as model.state_dict() returns it (an OrderedDict).
plain = collections.OrderedDict()
plain["fc.weight"] = weight
plain["fc.bias"] = bias
plain["count"] = torch.tensor([7], dtype=torch.int64)
torch.save(plain, os.path.join(HERE, "tiny_state_dict.pth"))

# (b) A training checkpoint: non-tensor entries beside a DataParallel ("module.") state dict.
wrapped = {
    "epoch": 3,
    "state_dict": {"module.fc.weight": weight.clone(), "module.fc.bias": bias.clone()},
}
torch.save(wrapped, os.path.join(HERE, "tiny_wrapped.pth"))

# (c) What timm's train.py writes: a real Module.state_dict() (an OrderedDict carrying a
# _metadata attribute, which pickles as BUILD) under "model_ema", next to a pickled Python object.
import argparse  # noqa: E402

model = torch.nn.Sequential(torch.nn.Linear(3, 2))
with torch.no_grad():
    model[0].weight.copy_(torch.arange(6).reshape(2, 3).float() / 4)
    model[0].bias.copy_(torch.tensor([-1.0, 0.5]))
train = {
    "epoch": 5,
    "args": argparse.Namespace(lr=0.1, model="tiny"),
    "model_ema": model.state_dict(),
}
torch.save(train, os.path.join(HERE, "tiny_train_checkpoint.pth"))

# (d) Views: torch.save keeps one storage for a tensor and its views (offsets, strides).
full = torch.arange(12).reshape(3, 4).float()
views = collections.OrderedDict()
views["full"] = full
views["row"] = full[1]
views["col"] = full[:, 2]
torch.save(views, os.path.join(HERE, "tiny_views.pth"))
