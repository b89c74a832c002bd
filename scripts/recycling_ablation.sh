#!/usr/bin/env bash
# The Fashion-MNIST recycling ablation of docs/results.md: a dense ViT (configs/vit_fmnist.json)
# pre-trained for 2 epochs, recycled by each method into the SpheroMoE ViT of
# configs/vit_fmnist_sphero.json (blocks 3-5, 8 core + 16 universal experts) and fine-tuned for one
# epoch, against the same MoE from random initialisation. Extra arguments go to every `moejet
# recycle` (e.g. --fc2-scale hidden). MOEJET_RUNS points the job at another output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEJET_BUILD_DIR:-build}/apps/moejet
RUNS=${MOEJET_RUNS:-runs}/recycling_ablation
Q=$([ -t 1 ] && echo "" || echo "-q")
mkdir -p "$RUNS/init"

if [ ! -f "$RUNS/dense/best.safetensors" ]; then
  "$BIN" train $Q --config configs/vit_fmnist.json --epochs 2 --out "$RUNS/dense" --resume
fi
top1() {  # the final eval's top-1 of a run directory
  sed -n 's/.*"top1": *\([0-9.]*\).*/\1/p' "$1/eval.json" | head -n 1
}
rows="dense (2 epochs): $(top1 "$RUNS/dense")"
for method in copy random uniform graph importance; do
  "$BIN" recycle $Q --dense "$RUNS/dense/best.safetensors" --model configs/vit_fmnist_sphero.json \
    --method "$method" --out "$RUNS/init/$method.safetensors" "$@"
  "$BIN" train $Q --config configs/vit_fmnist_sphero.json --epochs 1 --init "$RUNS/init/$method.safetensors" \
    --out "$RUNS/$method" --overwrite
  rows="$rows"$'\n'"$method: $(top1 "$RUNS/$method")"
done
"$BIN" train $Q --config configs/vit_fmnist_sphero.json --epochs 1 --out "$RUNS/scratch" --overwrite
rows="$rows"$'\n'"random init: $(top1 "$RUNS/scratch")"
echo "== top-1 after 1 fine-tuning epoch (full test set)"
echo "$rows"
