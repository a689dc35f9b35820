#!/usr/bin/env bash
# One task of the sweep on a Slurm cluster: run MODEL with the seed of this array task.
# Submit the whole sweep with `python sweep.py slurm --submit` (without --submit it prints the
# sbatch commands and every task's train.py command): one job array per model, one task per
# seed, each with its model's time and memory, and report.py --summary once all have ended.
# The sweep's variables (MODELS, SEEDS, EPOCHS, DATASET, DATA_DIR, RESULTS_DIR, TRAIN_FLAGS,
# PYTHON) are those of run.sh, passed on by sbatch's default --export=ALL.
#
# A task runs the command run.sh runs (sweep.py builds both): a preempted or requeued task gets
# SIGTERM two minutes ahead (--signal=B:TERM@120: this script has become train.py), keeps its last finished epoch, and resumes it
# when Slurm runs it again (--requeue).
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}"

model=$1
PYTHON=${PYTHON:-python}
defaults=$("$PYTHON" sweep.py defaults) || exit 2  # it checks the variables, and says why in one line
while IFS='=' read -r name value; do  # sweep.py's defaults for what the environment leaves unset
    [[ -n ${!name:-} ]] || printf -v "$name" '%s' "$value"
    export "${name?}"
done <<< "$defaults"
read -r -a seeds <<< "$SEEDS"
seed=${seeds[${SLURM_ARRAY_TASK_ID:-0}]}

mapfile -d '' -t run < <("$PYTHON" sweep.py run "$model" "$seed")  # state, folder, command
[[ ${#run[@]} -gt 2 ]] || { echo "slurm.sh: sweep.py run failed for $model seed $seed" >&2; exit 1; }
if [[ ${run[0]} == diverged ]]; then  # a divergence is a result: the report lists it
    echo "task ${SLURM_ARRAY_TASK_ID:-0} ($model seed $seed): diverged, as its summary says; skipped (delete ${run[1]} to train it again)"
    exit 0
fi
mkdir -p "${run[1]}"
echo "task ${SLURM_ARRAY_TASK_ID:-0} ($model seed $seed, ${run[0]}): $PYTHON ${run[*]:2}"
exec "$PYTHON" "${run[@]:2}"
