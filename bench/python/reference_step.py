#!/usr/bin/env python3
"""The Python peer of `moejet bench`: the same train steps in timm (and, for V-JetMoE-T, the MoE
Jetpack authors' own SpheroMoE layer), in fp32 and under CPU autocast (bf16), interleaved in one
run so that machine noise hits both alike. A step is forward + cross-entropy + backward + AdamW,
model in train mode, random data, median of --reps after one warm-up.

Cases (name, batch):
  vit_tiny   32   timm VisionTransformer, ViT-Tiny/16 at 224 (12 x 192, 3 heads, 1000 classes)
  vjetmoe    32   vit_tiny with blocks 6-11's MLPs replaced by the authors' DualPathSoftMoELayerWrapper
                  with V-JetMoE-T's settings (98 core + 196 universal experts, 1 slot)
  fmnist    128   a Fashion-MNIST ViT (28x28x1, patch 4, 6 x 192, 3 heads, 10 classes, cls token)
All ViTs use drop_path_rate 0.1.

Sources are put on sys.path, nothing is installed (bench/side_by_side.sh fetches nothing either):
  TIMM_SRC        folder holding timm/ (pytorch-image-models)
  MOEJETPACK_SRC  folder holding moejet/models/soft_moe.py (Adlith/MoE-Jetpack), for vjetmoe
  einops and entmax (deep-spin) importable, e.g. on PYTHONPATH, for vjetmoe
Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision).
Prints one line per case and precision and, with --out, writes JSON.
"""
import argparse, importlib, json, os, statistics, sys, time, types

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--cases", default="vit_tiny,vjetmoe,fmnist")
ap.add_argument("--precisions", default="fp32,bf16")
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--warmup", type=int, default=1, help="untimed steps per precision first (moejet bench --warmup)")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--out", default="")
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))  # before torch loads
sys.path.insert(0, os.environ.get("TIMM_SRC", "timm-src"))
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

torch.set_num_threads(args.threads)


def authors_soft_moe():
    # Only soft_moe.py: the package __init__ imports mmengine/mmpretrain.
    models_dir = os.path.join(os.environ.get("MOEJETPACK_SRC", "jetpack-src"), "moejet", "models")
    pkg = types.ModuleType("moejetpack_models")
    pkg.__path__ = [models_dir]
    sys.modules["moejetpack_models"] = pkg
    return importlib.import_module("moejetpack_models.soft_moe")


def vit_tiny():
    return VisionTransformer(img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192, depth=12,
                             num_heads=3, drop_path_rate=0.1)


def vjetmoe():
    sm = authors_soft_moe()
    m = vit_tiny()
    dpr = torch.linspace(0, 0.1, len(m.blocks)).tolist()
    for i in range(6, 12):
        m.blocks[i].mlp = sm.DualPathSoftMoELayerWrapper(
            dim=192, num_heads=3, num_experts=197, slots_per_expert=1, add_noise=True, noise_mult=1 / (98 + 196),
            moe_droprate=0.4, moe_droprate_act=None, moe_logits_drop=0.0, slot_layernorm=True,
            moe_drop_path_rate=dpr[i], compress_ratio=1.0, phi=None, core_experts=98, univ_experts=196,
            univ_factor=1 / 4, layer_scale=False, num_glu_experts=0, freeze_moe=False)
    return m


def fmnist():
    return VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=192, depth=6,
                             num_heads=3, drop_path_rate=0.1)


CASES = {"vit_tiny": (vit_tiny, 32, 224, 3, 1000), "vjetmoe": (vjetmoe, 32, 224, 3, 1000),
         "fmnist": (fmnist, 128, 28, 1, 10)}
precisions = args.precisions.split(",")
result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cases": []}
for name in args.cases.split(","):
    ctor, batch, img, chans, ncls = CASES[name]
    torch.manual_seed(0)
    model = ctor().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x, y = torch.randn(batch, chans, img, img), torch.randint(0, ncls, (batch,))

    def step(p):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    for p in precisions:
        for _ in range(args.warmup):
            step(p)
    times = {p: [] for p in precisions}
    for _ in range(args.reps):
        for p in precisions:
            times[p].append(step(p))
    for p in precisions:
        s = statistics.median(times[p])
        result["cases"].append({"case": name, "precision": p, "batch": batch, "step_seconds": s,
                                "img_per_s": batch / s, "step_seconds_all": times[p]})
        print(f"{name} {p} b{batch} {s:.3f} s/step {batch / s:.1f} img/s", flush=True)
    del model, opt
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
