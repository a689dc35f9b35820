#!/usr/bin/env bash
# Reproduce the paper's CIFAR-10 experiments: train every model at the paper's settings, then
# compare with Table 6 and draw Figures 6 and 7 (report.py --summary).
#
#   ./run.sh                                   # everything, seed 0, one job at a time
#   SEEDS="0 1 2 3 4" MODELS=ResNet110 ./run.sh   # the paper's five ResNet-110 runs
#   GPUS=0,1,2,3 ./run.sh                      # one job per GPU until the queue is empty
#   EPOCHS=3 MODELS="ResNet20 Plain20" TRAIN_FLAGS="--subset 5000" RESULTS_DIR=results-quick ./run.sh
#                                              # a smoke run of the whole pipeline, kept apart (a minute)
#   ./run.sh --estimate                        # benchmark each model briefly: every run's projected time
#                                              # and the whole sweep's on this machine; trains nothing
#
# Settings from the environment (defaults in brackets):
#   MODELS       models, in order [the paper's ResNets and plain nets, ResNet18/34/50, ResNet1202 last]
#   SEEDS        seeds; each run goes to RESULTS_DIR/seed<S>/<Model>/ [0]
#   EPOCHS       epochs per run [164]
#   DATASET      cifar10 or cifar100; CIFAR-100 runs go to RESULTS_DIR/seed<S>/cifar100/<Model>/ [cifar10]
#   DATA_DIR     the folder holding the data set's folder [data]
#   RESULTS_DIR  results root [results]
#   TRAIN_FLAGS  extra train.py flags, e.g. "--val-size 5000", "--compile off", "--recipe modern" []
#   GPUS         comma-separated GPU ids to run jobs on in parallel [unset: one job at a time]
#   PYTHON       the interpreter [python]
#
# What happens to each run is what `python sweep.py run` says of its folder: a finished run is
# skipped if its settings are the sweep's (train.py --resume checks, and refuses a run of other
# settings in one line: the sweep then stops there); a diverged one is skipped (a divergence is a
# result: the report lists it; delete its folder to train it again); a resumable one (a checkpoint,
# and no summary saying it ended: interrupted) is resumed; a new one is trained.
# Each run's output goes to its folder's train.log. A run that diverges is recorded and the sweep
# goes on; any other failing run stops the sweep (jobs already running on other GPUs finish
# first); finished runs are kept.
set -euo pipefail
cd "$(dirname "$0")"

# It takes variables, not arguments: a flag it does not know must not start the whole sweep.
if [[ $# -eq 1 && ( $1 == -h || $1 == --help ) ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//; p}' run.sh  # the comment above
    exit 0
elif [[ $# -eq 1 && $1 == --estimate ]]; then
    exec "${PYTHON:-python}" sweep.py estimate  # what the sweep would take here; it trains nothing
elif [[ $# -gt 0 ]]; then
    echo "run.sh: takes no arguments but --estimate, only the variables that ./run.sh --help lists; got: $*" >&2
    exit 2
fi

# The defaults live in sweep.py, which also builds each run's command, so run.sh and slurm.sh
# cannot drift apart: every variable it lists and the environment leaves unset takes its default.
PYTHON=${PYTHON:-python}
# sweep.py checks the variables first (say, MODELS=/a/path): nothing is made before that.
defaults=$("$PYTHON" sweep.py defaults) || exit 2
while IFS='=' read -r name value; do
    [[ -n ${!name:-} ]] || printf -v "$name" '%s' "$value"
    export "${name?}"
done <<< "$defaults"
GPUS=${GPUS:-}

# Ctrl-C or SIGTERM stops the sweep cleanly: every running train.py gets SIGTERM, keeps its last
# finished epoch and exits; run.sh waits for them, then exits with 128 + the signal. Only our own
# processes are signalled (never the process group, which may hold whatever started run.sh).
stopping=0
stop_targets=()  # what a signal is passed on to: this shell's train.py, or the GPU jobs' subshells
on_signal() {
    stopping=$1
    if [[ ${#stop_targets[@]} -gt 0 ]]; then kill -TERM "${stop_targets[@]}" 2> /dev/null || true; fi
}
trap 'on_signal 2' INT
trap 'on_signal 15' TERM

# Wait for process $1 and return its exit status, even when a signal's trap interrupts the wait
# (bash runs a trap only between commands, and `wait` is one it interrupts; a foreground command
# would hold the trap back until it ended).
wait_for() {
    local status
    while true; do
        wait "$1"
        status=$?
        kill -0 "$1" 2> /dev/null || return "$status"
    done
}

# Whether the run of model $1 with seed $2 is in state $3, as sweep.py reads its folder.
run_state() {
    local answer=()
    mapfile -d '' -t answer < <("$PYTHON" sweep.py run "$1" "$2")
    [[ ${answer[0]:-} == "$3" ]]
}

# Train one model with one seed, unless it already finished or diverged; resume it if it was interrupted.
run_one() {
    local model=$1 seed=$2
    local run=() folder log state status=0
    mapfile -d '' -t run < <("$PYTHON" sweep.py run "$model" "$seed")
    [[ ${#run[@]} -gt 2 ]] || { echo "run.sh: sweep.py run failed for $model seed $seed" >&2; return 1; }
    state=${run[0]} folder=${run[1]}
    log="$folder/train.log"
    # In a GPU job's subshell the traps are reset, and stop_targets is the main shell's list of
    # jobs: set both again, for this job's train.py alone.
    trap 'on_signal 2' INT
    trap 'on_signal 15' TERM
    stop_targets=()
    case $state in
        finished) ;;  # resumed: train.py checks that the run's settings are the sweep's, then does nothing
        diverged)
            echo "skip   $model seed $seed: diverged, as its summary says (listed by the report; delete $folder to train it again)"
            return 0 ;;
        resumable)
            echo "resume $model seed $seed${CUDA_VISIBLE_DEVICES:+ on GPU $CUDA_VISIBLE_DEVICES} (log: $log)" ;;
        *)
            echo "train  $model seed $seed${CUDA_VISIBLE_DEVICES:+ on GPU $CUDA_VISIBLE_DEVICES} (log: $log)" ;;
    esac
    [[ $stopping -ne 0 ]] && return 0
    mkdir -p "$folder"
    "$PYTHON" "${run[@]:2}" >> "$log" 2>&1 &
    stop_targets=($!)
    wait_for "$!" || status=$?
    stop_targets=()
    if [[ $stopping -ne 0 ]]; then
        echo "stopped $model seed $seed (log: $log); ./run.sh again resumes it" >&2
    elif [[ $status -ne 0 ]] && run_state "$model" "$seed" diverged; then
        echo "DIVERGED $model seed $seed: recorded in $folder (the report lists it); the sweep goes on" >&2
    elif [[ $status -ne 0 ]]; then
        echo "FAILED $model seed $seed; the end of $log:" >&2
        tail -n 5 "$log" >&2
        return 1
    elif [[ $state == finished ]]; then
        echo "skip   $model seed $seed: finished ($folder)"
    fi
}

# The sweep's environment, once per sweep (each run's summary also records its own versions).
echo "environment: $("$PYTHON" sweep.py environment | tr '\n' ' ')"

jobs_list=()
for model in $MODELS; do
    for seed in $SEEDS; do
        jobs_list+=("$model $seed")
    done
done

failed=0
if [[ -z "$GPUS" ]]; then
    for job in "${jobs_list[@]}"; do
        [[ $stopping -ne 0 ]] && break
        # shellcheck disable=SC2086  # "model seed"
        run_one $job || { failed=1; break; }
    done
else
    IFS=, read -r -a gpus <<< "$GPUS"
    pids=()  # pids[slot]: the job (a subshell running run_one) on gpus[slot], if any
    # Wait until a slot is free, reaping the job that held it; sets $slot.
    wait_for_free_slot() {
        while true; do
            for slot in "${!gpus[@]}"; do
                local pid=${pids[slot]:-}
                [[ -z "$pid" ]] && return
                if ! kill -0 "$pid" 2> /dev/null; then
                    wait_for "$pid" || failed=1
                    pids[slot]=""
                    return
                fi
            done
            sleep 1
        done
    }
    for job in "${jobs_list[@]}"; do
        wait_for_free_slot
        [[ $failed -ne 0 || $stopping -ne 0 ]] && break
        # shellcheck disable=SC2086  # "model seed"
        CUDA_VISIBLE_DEVICES=${gpus[slot]} run_one $job &
        pids[slot]=$!
        stop_targets=()
        for pid in "${pids[@]}"; do if [[ -n "$pid" ]]; then stop_targets+=("$pid"); fi; done
    done
    for pid in "${pids[@]}"; do
        if [[ -n "$pid" ]]; then wait_for "$pid" || failed=1; fi
    done
fi

if [[ $stopping -ne 0 ]]; then
    echo "run.sh: stopped by a signal; each run keeps its last finished epoch. Run ./run.sh again to carry on." >&2
    exit $((128 + stopping))
fi
if [[ $failed -ne 0 ]]; then
    echo "run.sh: stopped at the first failing run; finished runs are kept in $RESULTS_DIR." \
         "Fix the problem and run ./run.sh again: finished runs are skipped, interrupted ones resumed." >&2
    exit 1
fi
"$PYTHON" report.py --summary "$RESULTS_DIR" --models "$MODELS" --seeds "$SEEDS"
