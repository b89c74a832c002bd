#!/usr/bin/env bash
# The main job on the embedded default (Debian's Fashion-MNIST): train a dense ViT and evaluate it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEJET_BUILD_DIR:-build}/apps/moejet
OUT=${MOEJET_RUNS:-runs}/vit_fmnist
"$BIN" train --config configs/vit_fmnist.json --out "$OUT" "$@"
"$BIN" eval "$OUT/best.safetensors" --data fashion-mnist --split test --out "$OUT/eval"
