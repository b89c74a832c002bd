#!/usr/bin/env python3
"""Joins bench/side_by_side.sh's JSON files into one Markdown table: img/s of moejet and of the
Python peer per model and precision, and their ratio."""
import json, os, sys

out = sys.argv[1]
moejet = {}
for f in ("moejet_224.json", "moejet_fmnist.json"):
    j = json.load(open(os.path.join(out, f)))
    for run in j["runs"]:
        for m in run["models"]:
            case = ("vjetmoe" if "vjetmoe" in m["model"] else "fmnist" if "fmnist" in m["model"] else "vit_tiny")
            moejet[(case, m["precision"])] = m["img_per_s"]
    peaks = j.get("gemm_peak_gflops", {})
py = {(c["case"], c["precision"]): c["img_per_s"] for c in json.load(open(os.path.join(out, "python.json")))["cases"]}
names = {"vit_tiny": "dense ViT-T, batch 32", "vjetmoe": "V-JetMoE-T, batch 32", "fmnist": "Fashion-MNIST ViT, batch 128"}
print("| model | precision | moejet img/s | Python img/s | moejet / Python |")
print("|---|---|---:|---:|---:|")
for case in ("vit_tiny", "vjetmoe", "fmnist"):
    for p in ("fp32", "bf16"):
        m, q = moejet.get((case, p)), py.get((case, p))
        if m is None or q is None:
            continue
        print(f"| {names[case]} | {p}{' (autocast)' if p == 'bf16' else ''} | {m:.1f} | {q:.1f} | {m / q:.2f} |")
for p in ("fp32", "bf16"):
    d, e = moejet.get(("vit_tiny", p)), moejet.get(("vjetmoe", p))
    if d and e:
        print(f"\nmoejet {p}: V-JetMoE-T step / dense ViT-T step = {d / e:.2f}", end="")
print()
if peaks:
    print("\nGEMM peak this run: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
