"""Top-3 classes of one image with a model exported by `moejet export` (no moejet needed).

usage: python3 use_torchscript.py MODEL.pt IMAGE
"""
import json
import sys

import torch
import torchvision.transforms.functional as TF
from PIL import Image

extra = {"moejet.json": ""}
model = torch.jit.load(sys.argv[1], _extra_files=extra)
cfg = json.loads(extra["moejet.json"])  # also written beside the archive as MODEL.json
c, h, w = cfg["input_size"]
img = Image.open(sys.argv[2]).convert("L" if c == 1 else "RGB")
# moejet's eval preprocessing: shorter side to size / crop_pct, centre crop, normalise.
img = TF.resize(img, int(h / cfg["crop_pct"]), interpolation=TF.InterpolationMode(cfg["interpolation"]))
x = TF.normalize(TF.to_tensor(TF.center_crop(img, [h, w])), cfg["mean"], cfg["std"])
x = x.unsqueeze(0).expand(cfg["batch_size"], -1, -1, -1)  # traced for this batch size
with torch.no_grad():
    probs = model(x)[0].softmax(-1)
    for p, i in zip(*probs.topk(min(3, probs.numel()))):
        print(f"{cfg['label_names'][i]:12s} {100 * p:.1f}%")
    if "route" in cfg["outputs"]:  # Mobile V-MoE: the expert the router chose
        print("expert", model.route(x)[0].argmax().item())
