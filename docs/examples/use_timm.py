"""Load `moejet export --format timm` weights into timm's own model and compare with the TorchScript.

usage: python3 use_timm.py WEIGHTS.pth MODEL.pt   (a dense ViT; the timm arguments are its config's)
"""
import json
import sys

import timm
import torch

cfg = json.load(open(sys.argv[2].rsplit(".", 1)[0] + ".json"))["model"]
m = timm.create_model("vit_tiny_patch16_224", img_size=cfg["img_size"], patch_size=cfg["patch_size"],
                      in_chans=cfg["in_chans"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                      num_heads=cfg["num_heads"], num_classes=cfg["num_classes"],
                      class_token=cfg["class_token"], global_pool=cfg["global_pool"])
print(m.load_state_dict(torch.load(sys.argv[1])))
m.eval()
x = torch.randn(1, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
with torch.no_grad():
    print("max |timm - TorchScript| =", (m(x) - torch.jit.load(sys.argv[2])(x)).abs().max().item())
