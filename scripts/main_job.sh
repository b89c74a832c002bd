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
# The runs go side by side, MOEJET_MAIN_JOBS at a time (default: one per CPU), each on one thread
# (MOEJET_MAIN_THREADS), in the order their inputs allow; each writes its log to runs/main/logs/.
# On 2 cores, two one-thread runs side by side did 1.4-1.6x the work of one two-thread run at a
# time, and a run's numbers do not depend on how many run beside it.
# The upstream run lives in runs/main/upstream5 (five classes), reused when it finished.
# Extra arguments go to every downstream `moejet train` (e.g. --set train.epochs=4).
# MOEJET_MAIN_CONFIGS and MOEJET_RUNS point the job at other configs / another output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEJET_BUILD_DIR:-build}/apps/moejet
CONFIGS=${MOEJET_MAIN_CONFIGS:-configs/main}
RUNS=${MOEJET_RUNS:-runs}/main
SEEDS=${MOEJET_MAIN_SEEDS:-0 1 2}
JOBS=${MOEJET_MAIN_JOBS:-$(nproc)}
if ! [[ "$JOBS" =~ ^[1-9][0-9]*$ ]]; then
  echo "main job: MOEJET_MAIN_JOBS='$JOBS': expected how many runs at a time, 1 or more" >&2
  exit 2
fi
export OMP_NUM_THREADS=${MOEJET_MAIN_THREADS:-1}  # libtorch's and OpenBLAS's threads, per run
# glibc's heap on transparent huge pages (where the kernel offers them on request, as Debian's
# does): a run's first touch of its memory faults once per 2 MB instead of once per 4 KB, which
# took 0.6 s off each run's start and checkpoints (docs/performance.md). Unless the caller chose.
if [[ "${GLIBC_TUNABLES:-}" != *glibc.malloc.hugetlb* ]]; then
  export GLIBC_TUNABLES=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1
fi
LOGS=$RUNS/logs
start=$(date +%s)
mkdir -p "$RUNS/init" "$LOGS"
EXTRA=("$@")

# The jobs: a name, what it waits for, and a command. They start in this order as their inputs
# are ready, the longest chains first, so that the last ones to start are short.
declare -a order=()
declare -A deps=() cmd=() state=() began=() name_of=()
job() {  # name, "dependencies", command...
  local name=$1 needs=$2; shift 2
  order+=("$name")
  deps[$name]=$needs
  cmd[$name]=$(printf '%q ' "$@")
}
train() {  # config name, seed, extra flags...
  local name=$1 seed=$2; shift 2
  "$BIN" train -q --config "$CONFIGS/$name.json" --out "$RUNS/$name/seed$seed" --overwrite \
    --set "train.seed=$seed" "$@" "${EXTRA[@]}"
}
superclasses() {  # Mobile V-MoE's super-classes: the classes the fine-tuned dense model confuses
  local run=$RUNS/dense_finetune/seed$1
  "$BIN" eval -q "$run/best.safetensors" --split train --range 30000 60000 --limit 3000 --out "$run/eval_train"
  "$BIN" superclasses --confusion "$run/eval_train/confusion.csv" --experts 3 --out "$RUNS/superclasses.json"
}

# Reused only when it finished: a run that was stopped has a best.safetensors too, and resumes.
if [ -f "$RUNS/upstream5/best.safetensors" ] &&
  tail -n 1 "$RUNS/upstream5/metrics.jsonl" 2> /dev/null | grep -q '"event":"done"'; then
  echo "== 1. upstream dense ViT: reusing $RUNS/upstream5/best.safetensors"
  state[upstream]=done
else
  echo "== 1. upstream dense ViT: pre-training on Fashion-MNIST classes 0-4, train[0:30000]"
  job upstream "" "$BIN" train -q --config "$CONFIGS/upstream_dense.json" --out "$RUNS/upstream5" --resume
fi
echo "== 2-3. recycling, then the downstream runs (seeds: $SEEDS), $JOBS at a time, logs in $LOGS"
first=${SEEDS%% *}
for s in $SEEDS; do job "softmoe_scratch-seed$s" "" train softmoe_scratch "$s"; done
# The recycling statistics come from the downstream training images. Mobile V-MoE's experts are
# upcycled: each a copy of the dense MLP.
job recycle-jetmoe upstream "$BIN" recycle -q --dense "$RUNS/upstream5/best.safetensors" \
  --model "$CONFIGS/jetmoe.json" --method importance --out "$RUNS/init/jetmoe.safetensors"
job recycle-mobile_vmoe upstream "$BIN" recycle -q --dense "$RUNS/upstream5/best.safetensors" \
  --model "$CONFIGS/mobile_vmoe.json" --method copy --out "$RUNS/init/mobile_vmoe.safetensors"
dense_finetune_job() {  # seed
  job "dense_finetune-seed$1" upstream train dense_finetune "$1" --init "$RUNS/upstream5/best.safetensors"
}
dense_finetune_job "$first"  # early: the super-classes come from it
for s in $SEEDS; do job "jetmoe-seed$s" recycle-jetmoe train jetmoe "$s" --init "$RUNS/init/jetmoe.safetensors"; done
job superclasses "dense_finetune-seed$first" superclasses "$first"
for s in $SEEDS; do
  job "mobile_vmoe-seed$s" "superclasses recycle-mobile_vmoe" train mobile_vmoe "$s" \
    --init "$RUNS/init/mobile_vmoe.safetensors" --set "train.superclasses=$RUNS/superclasses.json"
done
for s in $SEEDS; do
  [ "$s" = "$first" ] || dense_finetune_job "$s"
done
for s in $SEEDS; do job "dense_scratch-seed$s" "" train dense_scratch "$s"; done

# The scheduler: start every job whose inputs are done while a slot is free, then wait for one.
total=${#order[@]} finished=0  # the running jobs are name_of's entries
set -m  # each job in its own process group, so that stopping it stops the moejet it runs
stop_all() {
  for pid in "${!name_of[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait || true
}
trap 'stop_all; exit 130' INT TERM
while ((finished < total)); do
  for name in "${order[@]}"; do
    ((${#name_of[@]} < JOBS)) || break
    [ -z "${state[$name]:-}" ] || continue
    ready=1
    for d in ${deps[$name]}; do [ "${state[$d]:-}" = done ] || ready=0; done
    ((ready)) || continue
    ( eval "${cmd[$name]}" ) > "$LOGS/$name.log" 2>&1 &
    name_of[$!]=$name state[$name]=running began[$name]=$SECONDS
    printf '%*s %-26s started\n' $((5 + ${#total})) "" "$name"  # under the names of the lines below
  done
  if ((${#name_of[@]} == 0)); then
    echo "main job: nothing can start (a job waits for one that is not in the list)" >&2
    exit 1
  fi
  rc=0
  wait -n -p pid || rc=$?
  name=${name_of[$pid]}
  unset "name_of[$pid]"
  finished=$((finished + 1))
  if ((rc != 0)); then
    echo "!! $name failed (exit $rc); the end of $LOGS/$name.log:" >&2
    tail -n 20 "$LOGS/$name.log" >&2
    stop_all
    exit 1
  fi
  state[$name]=done
  result=$(tail -n 1 "$LOGS/$name.log" | sed -E 's/^\[[0-9:]+\] (info )?//; s/; run in .*//')
  printf '[%2d/%d] %-26s %4d s  %s\n' "$finished" "$total" "$name" "$((SECONDS - began[$name]))" "$result"
done

echo "== 4. report"
cat > "$RUNS/report_notes.md" <<'NOTES'
Upstream: a dense ViT (6 blocks, width 192, patch 7) pre-trained on the Fashion-MNIST classes
T-shirt/top, Trouser, Pullover, Dress and Coat (training images 0-29999). Downstream: the five
other classes (Sandal, Shirt, Sneaker, Bag, Ankle boot), which the checkpoint never saw: 3000
labelled images (class-balanced) from training images 30000-59999, 8 epochs for every run, test
top-1 on 2000 test images of those classes, before training and after every second epoch; every
initialised run gets a new head. What the recycled
and fine-tuned runs gain over the from-scratch runs is upstream knowledge that transfers to new
classes. Each method runs with several seeds (its count in the table). Configs: configs/main/*.json;
command: scripts/main_job.sh.
NOTES
echo "Every run had $OMP_NUM_THREADS CPU thread(s), with up to $JOBS runs side by side (MOEJET_MAIN_JOBS): img/s
compares the methods with each other, not with a run that has the machine to itself." >> "$RUNS/report_notes.md"
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
