#!/usr/bin/env bash
# moejet against its Python peer on this machine, in one table: `moejet bench` on dense ViT-T and
# V-JetMoE-T (batch 32, 224x224) and the Fashion-MNIST ViT (batch 128, patch 4), then
# bench/python/reference_step.py on the same models in timm (and the MoE Jetpack authors' layer),
# each in fp32 and bf16 (Python: CPU autocast), one right after the other.
#
#   TIMM_SRC=<folder with timm/> MOEJETPACK_SRC=<folder with moejet/models/> \
#   PYTHONPATH=<einops src>:<entmax src> bench/side_by_side.sh [OUT_DIR]
#
# Needs Debian's python3-torch and python3-torchvision; the sources come from snapshots of
# huggingface/pytorch-image-models, Adlith/MoE-Jetpack, arogozhnikov/einops, deep-spin/entmax.
# REPS (default 5) timed steps each, after WARMUP (default 2) untimed ones on both sides: the first
# steps pay for first-touch allocations and kernel set-up, on this machine up to 1.8x a later
# step (Python ViT-T bf16, 2026-12-02). Writes OUT_DIR/{moejet_224,moejet_fmnist,python}.json and
# OUT_DIR/side_by_side.md. moejet's side also times each model's products alone (`bench --floor`):
# the Python step over that floor is the highest ratio these kernels leave room for.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/side_by_side}
BIN=${MOEJET_BUILD_DIR:-build}/apps/moejet
REPS=${REPS:-5}
WARMUP=${WARMUP:-2}
mkdir -p "$OUT"
"$BIN" bench -m configs/paper/vit_tiny.json configs/paper/vjetmoe_tiny.json --batch 32 --steps "$REPS" --warmup "$WARMUP" \
  --precision fp32,bf16 --floor -o "$OUT/moejet_224.json"
"$BIN" bench -m configs/vit_fmnist.json --set patch_size=4 --set class_token=true --set global_pool=token \
  --set drop_path_rate=0.1 --batch 128 --steps "$REPS" --warmup "$WARMUP" --precision fp32,bf16 --floor -o "$OUT/moejet_fmnist.json"
/usr/bin/python3 bench/python/reference_step.py --reps "$REPS" --warmup "$WARMUP" --out "$OUT/python.json"
/usr/bin/python3 bench/python/side_by_side_table.py "$OUT" | tee "$OUT/side_by_side.md"
