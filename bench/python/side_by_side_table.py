#!/usr/bin/env python3
"""Joins bench/side_by_side.sh's JSON files into one Markdown table: img/s of moejet and of the
Python peer per model and precision, and their ratio; with `moejet bench --floor`'s figures, also
moejet's products alone and the Python step over them: the highest ratio those kernels allow."""
import json, os, sys


def case_of(model):
    return "vjetmoe" if "vjetmoe" in model else "fmnist" if "fmnist" in model else "vit_tiny"


out = sys.argv[1]
moejet, floor, batch = {}, {}, {}
for f in ("moejet_224.json", "moejet_fmnist.json"):
    j = json.load(open(os.path.join(out, f)))
    for run in j["runs"]:
        for m in run["models"]:
            moejet[(case_of(m["model"]), m["precision"])] = m["img_per_s"]
            batch[case_of(m["model"])] = run["batch"]
    for m in j.get("products_alone", []):
        floor[(case_of(m["model"]), m["precision"])] = m["products_seconds"]
    peaks = j.get("gemm_peak_gflops", {})
py = {(c["case"], c["precision"]): c["img_per_s"] for c in json.load(open(os.path.join(out, "python.json")))["cases"]}
names = {"vit_tiny": "dense ViT-T, batch 32", "vjetmoe": "V-JetMoE-T, batch 32", "fmnist": "Fashion-MNIST ViT, batch 128"}
head = "| model | precision | moejet img/s | Python img/s | moejet / Python |"
rule = "|---|---|---:|---:|---:|"
if floor:
    head += " moejet's products alone (s) | bound: Python step / products |"
    rule += "---:|---:|"
print(head)
print(rule)
for case in ("vit_tiny", "vjetmoe", "fmnist"):
    for p in ("fp32", "bf16"):
        m, q = moejet.get((case, p)), py.get((case, p))
        if m is None or q is None:
            continue
        row = f"| {names[case]} | {p}{' (autocast)' if p == 'bf16' else ''} | {m:.1f} | {q:.1f} | {m / q:.2f} |"
        if floor:
            f = floor.get((case, p))
            row += f" {f:.3f} | {batch[case] / q / f:.2f} |" if f else " - | - |"
        print(row)
for p in ("fp32", "bf16"):
    d, e = moejet.get(("vit_tiny", p)), moejet.get(("vjetmoe", p))
    if d and e:
        print(f"\nmoejet {p}: V-JetMoE-T step / dense ViT-T step = {d / e:.2f}", end="")
        fd, fe = floor.get(("vit_tiny", p)), floor.get(("vjetmoe", p))
        if fd and fe:
            print(f" (their products alone: {fe / fd:.2f})", end="")
print()
if peaks:
    print("\nGEMM peak this run: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
