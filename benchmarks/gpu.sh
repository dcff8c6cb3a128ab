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
# boxes summed within BUDGET_S; issue 13's cases use at most 240 s.
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
import json, torch, attn2d.bench as b
print(json.dumps({**b.environment(), 'cuda': torch.version.cuda}, indent=1))"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1

# Issue 13: criss-cross / RCCA in linear memory; gates at parity with timm.
LARGE=(--sizes 32x256x32x32 16x64x64x64 8x512x16x16)
run_case cross-time 45 "${TARGETS[@]}" cross-time --out "$OUT_DIR/cross-time" \
  --sides 64 128 256 --repeats 3 --budget 0.3
run_case scaling 45 "${TARGETS[@]}" scaling --out "$OUT_DIR/scaling" --sides 128 256
run_case timm-fp32 50 "${TARGETS[@]}" timm --out "$OUT_DIR/timm-fp32" --dtype fp32 \
  --repeats 3 --budget 0.2 "${LARGE[@]}"
run_case timm-bf16 50 "${TARGETS[@]}" timm --out "$OUT_DIR/timm-bf16" --dtype bf16 \
  --repeats 3 --budget 0.2 "${LARGE[@]}"
run_case cbam-memory 30 "${TARGETS[@]}" cbam-memory --out "$OUT_DIR/cbam-memory" \
  --dtype fp32 bf16 --budget 0.2

# Issue 11 (training throughput) goes here, e.g.
# run_case throughput 120 "$PY" benchmarks/train_throughput.py --device "$DEVICE" ...

echo "total $((SECONDS - T0)) s of ${BUDGET_S} s" >> "$SUMMARY"
cat "$SUMMARY"
