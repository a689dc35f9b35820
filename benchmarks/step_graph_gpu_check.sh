#!/usr/bin/env bash
# The GPU measurements of --step-graph on, in one command of at most BUDGET_S seconds (default 540),
# for a session that holds a GPU for minutes only. From the repository root:
#
#   DATA_DIR=/path/holding/cifar-10-batches-py bash benchmarks/step_graph_gpu_check.sh
#
# In order of importance, each step under its own time limit:
#   1. the GPU, its driver, torch, CUDA and cuDNN;
#   2. whether the captured step is the step as written (benchmarks/step_graph_equivalence.py,
#      fp32, deterministic kernels: 0 difference expected), for ResNet-20 and ResNet-110;
#   3. ResNet-20's --benchmark without and with the step graph (the default path first);
#   4. the paper's full ResNet-20 run with --step-graph on, timed end to end (compilation included);
#   5. --benchmark --step-graph on for the other depths and families (compilation seconds as warm-up);
#   6. the sweep's estimate with the step graph (run.sh --estimate).
# Everything printed goes to $OUT/log.txt; the run's record (summary JSON/TXT, CSV) to $OUT/run/.
set -uo pipefail
OUT=${OUT:-${TMPDIR:-/tmp}/step-graph-check}
RESULTS=${TMPDIR:-/tmp}/step-graph-results
mkdir -p "$OUT/run"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
END=$(( $(date +%s) + ${BUDGET_S:-540} ))
limit() { local left=$(( END - $(date +%s) )); [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
step() { echo; echo "=== $* ($(date -u +%T))"; }
benchmark() { timeout "$(limit "$1")" python train.py --benchmark --model "${@:2}" 2>&1 | grep -v -i warn | tail -6; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())"

step "the captured step against the step as written"
timeout "$(limit 60)" python benchmarks/step_graph_equivalence.py --model ResNet20
timeout "$(limit 60)" python benchmarks/step_graph_equivalence.py --model ResNet110 --steps 12

step "ResNet-20: the default path, then the step graph"
benchmark 90 ResNet20
benchmark 90 ResNet20 --step-graph on

if [ -n "${DATA_DIR:-}" ]; then
  step "the paper's full ResNet-20 run with --step-graph on"
  start=$(date +%s.%N)
  timeout "$(limit 240)" python train.py --model ResNet20 --step-graph on --data-dir "$DATA_DIR" \
    --results-dir "$RESULTS" --overwrite 2>&1 | grep -v -i warn | tail -8
  echo "exit ${PIPESTATUS[0]}; wall $(python -c "import time; print(f'{time.time() - $start:.1f}')") s"
  cp "$RESULTS"/ResNet20/ResNet20_results.{json,txt,csv} "$OUT/run/" 2>/dev/null
else
  step "no DATA_DIR: the full run is skipped"
fi

step "--benchmark --step-graph on, every depth and family"
for model in ResNet56 ResNet110 Plain56 PreActResNet110 ResNeXt29_2x64d ResNet1202; do
  [ "$(limit 60)" -ge 30 ] && benchmark 120 "$model" --step-graph on
done

step "the sweep's estimate with the step graph"
[ "$(limit 60)" -ge 30 ] && TRAIN_FLAGS="--step-graph on" timeout "$(limit 300)" bash run.sh --estimate
step "done"
