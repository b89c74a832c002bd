#!/usr/bin/env bash
# The main job on the embedded default (Debian's Fashion-MNIST): MoE Jetpack end to end, on a
# downstream task the checkpoint was not trained for.
#   1. pre-train a dense ViT upstream on five classes (T-shirt/top, Trouser, Pullover, Dress, Coat),
#      training images 0-29999 (reused when present);
#   2. recycle it into a SpheroMoE dual-path ViT (importance-based sampling) for the downstream task:
#      the five other classes (Sandal, Shirt, Sneaker, Bag, Ankle boot), 3000 labelled images from
#      training images 30000-59999; its head is new (other classes);
#   3. train the baselines under the same budget: dense fine-tuned, dense from scratch, Soft MoE from
#      scratch, and Mobile V-MoE (recycled experts, router supervised by super-classes found in the
#      fine-tuned dense model's confusion on the downstream training images), every method with
#      each seed of MOEJET_MAIN_SEEDS (default 0 1 2), each run evaluated before its first step;
#   4. write runs/main/report/report.md (mean ± sd over seeds, convergence and loss figures with
#      bands, expert utilisation).
# Every run is a config in configs/main/ (seeded: reruns give the same numbers on one machine).
# The upstream run lives in runs/main/upstream5 (five classes), reused when present.
# Extra arguments go to every downstream `moejet train` (e.g. --set train.epochs=4).
# MOEJET_MAIN_CONFIGS and MOEJET_RUNS point the job at other configs / another output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEJET_BUILD_DIR:-build}/apps/moejet
CONFIGS=${MOEJET_MAIN_CONFIGS:-configs/main}
RUNS=${MOEJET_RUNS:-runs}/main
Q=$([ -t 1 ] && echo "" || echo "-q")  # progress bars on a terminal, plain lines otherwise
SEEDS=${MOEJET_MAIN_SEEDS:-0 1 2}
start=$(date +%s)
mkdir -p "$RUNS/init"

if [ -f "$RUNS/upstream5/best.safetensors" ]; then
  echo "== 1. upstream dense ViT: reusing $RUNS/upstream5/best.safetensors"
else
  echo "== 1. upstream dense ViT: pre-training on Fashion-MNIST classes 0-4, train[0:30000]"
  "$BIN" train $Q --config "$CONFIGS/upstream_dense.json" --out "$RUNS/upstream5" --resume
fi

echo "== 2. recycling the dense checkpoint (statistics on the downstream training images)"
"$BIN" recycle $Q --dense "$RUNS/upstream5/best.safetensors" --model "$CONFIGS/jetmoe.json" \
  --method importance --out "$RUNS/init/jetmoe.safetensors"
# Mobile V-MoE: experts upcycled (each a copy of the dense MLP).
"$BIN" recycle $Q --dense "$RUNS/upstream5/best.safetensors" --model "$CONFIGS/mobile_vmoe.json" \
  --method copy --out "$RUNS/init/mobile_vmoe.safetensors"

echo "== 3. downstream runs, same budget, seeds: $SEEDS"
train() {  # name, seed, extra flags...
  local name=$1 seed=$2; shift 2
  echo "-- $name, seed $seed"
  "$BIN" train $Q --config "$CONFIGS/$name.json" --out "$RUNS/$name/seed$seed" --overwrite \
    --set "train.seed=$seed" "$@"
}
for s in $SEEDS; do train dense_finetune "$s" --init "$RUNS/upstream5/best.safetensors" "$@"; done
for s in $SEEDS; do train jetmoe "$s" --init "$RUNS/init/jetmoe.safetensors" "$@"; done
for s in $SEEDS; do train dense_scratch "$s" "$@"; done
for s in $SEEDS; do train softmoe_scratch "$s" "$@"; done
# Mobile V-MoE's super-classes: the downstream classes the fine-tuned dense model confuses.
first=${SEEDS%% *}
"$BIN" eval $Q "$RUNS/dense_finetune/seed$first/best.safetensors" --split train --range 30000 60000 --limit 3000 \
  --out "$RUNS/dense_finetune/seed$first/eval_train" >/dev/null
"$BIN" superclasses --confusion "$RUNS/dense_finetune/seed$first/eval_train/confusion.csv" --experts 3 \
  --out "$RUNS/superclasses.json"
for s in $SEEDS; do
  train mobile_vmoe "$s" --init "$RUNS/init/mobile_vmoe.safetensors" --set "train.superclasses=$RUNS/superclasses.json" "$@"
done

echo "== 4. report"
cat > "$RUNS/report_notes.md" <<'NOTES'
Upstream: a dense ViT (6 blocks, width 192, patch 7) pre-trained on the Fashion-MNIST classes
T-shirt/top, Trouser, Pullover, Dress and Coat (training images 0-29999). Downstream: the five
other classes (Sandal, Shirt, Sneaker, Bag, Ankle boot), which the checkpoint never saw: 3000
labelled images (class-balanced) from training images 30000-59999, 8 epochs for every run, test
top-1 on 2000 test images of those classes; every initialised run gets a new head. What the recycled
and fine-tuned runs gain over the from-scratch runs is upstream knowledge that transfers to new
classes. Each method runs with several seeds (its count in the table). Configs: configs/main/*.json;
command: scripts/main_job.sh.
NOTES
runs_of() {  # label, name: one --run per seed
  for s in $SEEDS; do printf -- '--run\0%s=%s\0' "$1" "$RUNS/$2/seed$s"; done
}
mapfile -d '' report_runs < <(
  runs_of "MoE Jetpack (SpheroMoE, recycled)" jetmoe
  runs_of "dense, fine-tuned" dense_finetune
  runs_of "dense, scratch" dense_scratch
  runs_of "Soft MoE, scratch" softmoe_scratch
  runs_of "Mobile V-MoE (recycled, super-classes)" mobile_vmoe
)
"$BIN" report --title "MoE Jetpack on Fashion-MNIST: a dense checkpoint -> MoE, on classes it never saw" \
  --notes "$RUNS/report_notes.md" "${report_runs[@]}" --out "$RUNS/report"
echo "== done in $(( $(date +%s) - start )) s: $RUNS/report/report.md"
