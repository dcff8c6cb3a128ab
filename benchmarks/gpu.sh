#!/usr/bin/env bash
# Every device measurement the open issues ask for, in ONE call on a lent GPU.
#
#   bash benchmarks/gpu.sh                        # CUDA; results in $OUT, else ./gpu-results
#   bash benchmarks/gpu.sh --device cpu --quick   # the same pipeline on the CPU, tiny sizes
#
# Needs nothing beyond the repository (PYTHONPATH=src), torch, timm and matplotlib; no
# network. Each case runs under its own time box (`timeout`), so one slow or failing case
# costs its box and no more; the whole script stays within BUDGET_S (8 minutes). Every case
# writes <name>.log and, where it measures, <name>/<section>.{md,json} under the output
# folder; summary.md lists each case's status and seconds. --quick shrinks every size.
#
# Adding a case: one `run_case NAME SECONDS COMMAND...` line in the list below. Keep the
# boxes summed within BUDGET_S: issue 13's cases use 200 s, issue 11's 260 s.
set -u

DEVICE=cuda
QUICK=()
OUT_DIR="${OUT:-./gpu-results}"
BUDGET_S=480
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    *) echo "gpu.sh: expected --device DEV, --quick or --out DIR, got $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT_DIR"
export PYTHONPATH=src
# glibc keeps freed memory (the steady state of a training loop): see benchmarks/README.md.
export MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864
PY="${PYTHON:-python3}"
T0=$SECONDS
SUMMARY="$OUT_DIR/summary.md"
printf '| case | status | seconds | box |\n| :--- | :--- | ---: | ---: |\n' > "$SUMMARY"

# run_case NAME SECONDS COMMAND...: run COMMAND with a SECONDS time box (skipped when the
# script's budget cannot cover the box), output to NAME.log, status to summary.md.
run_case() {
  local name="$1" box="$2" start status rc
  shift 2
  if [ $((SECONDS - T0 + box)) -gt "$BUDGET_S" ]; then
    printf '| %s | skipped: over the %s s budget | 0 | %s |\n' "$name" "$BUDGET_S" "$box" >> "$SUMMARY"
    return
  fi
  echo "== $name (box ${box}s)" >&2
  start=$SECONDS
  timeout --kill-after=10 "$box" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timed out" ;;
    *) status="failed (exit $rc)" ;;
  esac
  printf '| %s | %s | %s | %s |\n' "$name" "$status" $((SECONDS - start)) "$box" >> "$SUMMARY"
  tail -n 3 "$OUT_DIR/$name.log" >&2
}

# benchmarks/targets.py on this device; each case adds its section, --out and options.
TARGETS=("$PY" benchmarks/targets.py --device "$DEVICE" --clock wall ${QUICK[@]+"${QUICK[@]}"})

# --- the cases ------------------------------------------------------------------------

run_case environment 20 "$PY" -c "
import json, torch, attn2d.tools.bench as b
print(json.dumps({**b.environment(), 'cuda': torch.version.cuda}, indent=1))"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1

# Issue 13: criss-cross / RCCA in linear memory; gates at parity with timm.
LARGE=(--sizes 32x256x32x32 16x64x64x64 8x512x16x16)
run_case cross-time 35 "${TARGETS[@]}" cross-time --out "$OUT_DIR/cross-time" \
  --sides 64 128 256 --repeats 3 --budget 0.3
run_case scaling 35 "${TARGETS[@]}" scaling --out "$OUT_DIR/scaling" --sides 128 256
run_case timm-fp32 40 "${TARGETS[@]}" timm --out "$OUT_DIR/timm-fp32" --dtype fp32 \
  --repeats 3 --budget 0.2 "${LARGE[@]}"
run_case timm-bf16 40 "${TARGETS[@]}" timm --out "$OUT_DIR/timm-bf16" --dtype bf16 \
  --repeats 3 --budget 0.2 "${LARGE[@]}"
run_case cbam-memory 30 "${TARGETS[@]}" cbam-memory --out "$OUT_DIR/cbam-memory" \
  --dtype fp32 bf16 --budget 0.2

# Issue 11: training throughput. Fashion-MNIST must be in /usr/share/datasets/fashion-mnist
# (carry a folder of the four .gz files and copy them there first; see benchmarks/README.md).
if [ ${#QUICK[@]} -gt 0 ]; then
  MODEL=small_cnn; BATCH=32; STEPS=2; SUBSET=(--subset 256 --test-subset 128); EPOCHS=1
else
  MODEL=resnet18; BATCH=256; STEPS=20; SUBSET=(); EPOCHS=2
fi
# The step per mechanism, eager and as a CUDA graph, against the baseline; the loop beside it.
run_case throughput 80 "$PY" benchmarks/train_throughput.py --device "$DEVICE" --model "$MODEL" \
  --batch-size "$BATCH" --amp bf16 --steps "$STEPS" --repeats 3 --graphs \
  --mechanisms none,se,eca,cbam,nonlocal,danet,criss-cross,coord,gc --modes eager \
  --out "$OUT_DIR/throughput"
# attn2d train as a user runs it: ResNet-18, batch 256, bf16, channels-last, CUDA graphs
# (target: >= 60k images/s); compilation is reported apart in result.json.
run_case train-graphs 80 "$PY" -m attn2d train --device "$DEVICE" --model "$MODEL" \
  --batch-size "$BATCH" --amp bf16 --compile reduce-overhead --epochs "$EPOCHS" ${SUBSET[@]+"${SUBSET[@]}"} \
  --no-progress --out "$OUT_DIR/train-graphs"
# The demo's 7 mechanisms, 1 seed, 3 epochs on all 60,000 images (target: <= 90 s wall,
# compilation included): the command's wall time is this case's seconds in summary.md.
run_case demo 100 "$PY" -m attn2d compare --device "$DEVICE" --model small_cnn \
  --attention none,se,eca,cbam,nonlocal,danet,criss-cross --seeds 1 --epochs 3 --jobs 4 \
  --batch-size 256 ${SUBSET[@]+"${SUBSET[@]}"} --no-progress --no-html --out "$OUT_DIR/demo"

echo "total $((SECONDS - T0)) s of ${BUDGET_S} s" >> "$SUMMARY"
cat "$SUMMARY"
