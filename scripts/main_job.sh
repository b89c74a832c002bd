#!/usr/bin/env bash
# The main job on the embedded default (Debian's Fashion-MNIST): MoE Jetpack end to end.
#   1. pre-train a dense ViT on the upstream half of the training set (reused when present);
#   2. recycle it into a SpheroMoE dual-path ViT (importance-based sampling) and fine-tune it on
#      the downstream task: 3000 labelled images from the other half;
#   3. train the baselines under the same budget: dense from scratch, dense fine-tuned, Soft MoE
#      from scratch, and Mobile V-MoE (recycled experts, router supervised by super-classes found
#      in the upstream model's confusion matrix);
#   4. write runs/main/report/report.md (accuracy table, convergence curves, expert utilisation).
# Every run is a config in configs/main/ (seeded: reruns give the same numbers on one machine).
# Extra arguments go to every downstream `moejet train` (e.g. --set train.epochs=4).
# MOEJET_MAIN_CONFIGS and MOEJET_RUNS point the job at other configs / another output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEJET_BUILD_DIR:-build}/apps/moejet
CONFIGS=${MOEJET_MAIN_CONFIGS:-configs/main}
RUNS=${MOEJET_RUNS:-runs}/main
Q=$([ -t 1 ] && echo "" || echo "-q")  # progress bars on a terminal, plain lines otherwise
start=$(date +%s)
mkdir -p "$RUNS/init"

if [ -f "$RUNS/upstream/best.safetensors" ]; then
  echo "== 1. upstream dense ViT: reusing $RUNS/upstream/best.safetensors"
else
  echo "== 1. upstream dense ViT: pre-training on Fashion-MNIST train[0:30000]"
  "$BIN" train $Q --config "$CONFIGS/upstream_dense.json" --out "$RUNS/upstream" --resume
fi

echo "== 2. recycling the dense checkpoint (statistics on the downstream training images)"
"$BIN" recycle $Q --dense "$RUNS/upstream/best.safetensors" --model "$CONFIGS/jetmoe.json" \
  --method importance --out "$RUNS/init/jetmoe.safetensors"
# Mobile V-MoE: super-classes from the upstream model's confusion on upstream training images,
# experts upcycled (each a copy of the dense MLP).
"$BIN" eval $Q "$RUNS/upstream/best.safetensors" --split train --range 0 30000 --limit 5000 --out "$RUNS/upstream/eval_train" >/dev/null
"$BIN" superclasses --confusion "$RUNS/upstream/eval_train/confusion.csv" --experts 5 --out "$RUNS/superclasses.json"
"$BIN" recycle $Q --dense "$RUNS/upstream/best.safetensors" --model "$CONFIGS/mobile_vmoe.json" \
  --method copy --out "$RUNS/init/mobile_vmoe.safetensors"

echo "== 3. downstream runs, same budget"
train() {  # name, extra flags...
  local name=$1; shift
  echo "-- $name"
  "$BIN" train $Q --config "$CONFIGS/$name.json" --out "$RUNS/$name" --overwrite "$@"
}
train jetmoe --init "$RUNS/init/jetmoe.safetensors" "$@"
train dense_finetune --init "$RUNS/upstream/best.safetensors" "$@"
train dense_scratch "$@"
train softmoe_scratch "$@"
train mobile_vmoe --init "$RUNS/init/mobile_vmoe.safetensors" --set "train.superclasses=$RUNS/superclasses.json" "$@"

echo "== 4. report"
cat > "$RUNS/report_notes.md" <<'NOTES'
Upstream: a dense ViT (6 blocks, width 192, patch 7) pre-trained on Fashion-MNIST training images
0-29999. Downstream: 3000 labelled images (class-balanced) from training images 30000-59999, 8
epochs for every run, evaluated on 2000 test images (class-balanced). The checkpoint never saw a
downstream image, so what the recycled and fine-tuned runs gain over the from-scratch runs is the
upstream knowledge. Configs: configs/main/*.json; command: scripts/main_job.sh.
NOTES
"$BIN" report --title "MoE Jetpack on Fashion-MNIST: dense checkpoint -> MoE" --notes "$RUNS/report_notes.md" \
  --run "MoE Jetpack (SpheroMoE, recycled)=$RUNS/jetmoe" \
  --run "dense, fine-tuned=$RUNS/dense_finetune" \
  --run "dense, scratch=$RUNS/dense_scratch" \
  --run "Soft MoE, scratch=$RUNS/softmoe_scratch" \
  --run "Mobile V-MoE (recycled, super-classes)=$RUNS/mobile_vmoe" \
  --out "$RUNS/report"
echo "== done in $(( $(date +%s) - start )) s: $RUNS/report/report.md"
