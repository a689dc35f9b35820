"""Where a training step's time goes: its parts timed alone, and the device's busy time against the host's.

    python benchmarks/step_profile.py --model ResNet20                      # compiled as a full run is
    python benchmarks/step_profile.py --model ResNet20 --compile off
    python benchmarks/step_profile.py --model ResNet56 --compile-mode default
    python benchmarks/step_profile.py --model ResNet20 --step-graph on     # the whole step as one CUDA graph

Prints, in milliseconds per step at the paper's batch of 128 on random images: the whole step as
train.py runs it (passes.TrainStep: batch, forward, loss, backward, update, running sums);
the batch alone (gather, crop, flip, normalise); forward + loss + backward alone on one batch; the
update alone; then, from torch.profiler, the time the device spent in kernels per step and the
operations that cost the host or the device most. A step that takes much longer than its device
time is bound by the host (Python and kernel launches), not by the GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_resnet import (
    data,  # noqa: E402
    graphs,  # noqa: E402
    passes,  # noqa: E402
    settings,  # noqa: E402
)
from cifar_resnet.benchmark import random_train_loader  # noqa: E402
from cifar_resnet.hardware import StopSignals, setup  # noqa: E402
from cifar_resnet.recipe import make_optimizer, make_schedule  # noqa: E402

TIMED_STEPS = 200
PROFILED_STEPS = 50
TABLE_ROWS = 12


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def milliseconds_per_call(function: Callable[[], object], calls: int, device: torch.device) -> str:
    """Per call: the time until the host has issued all calls, and until the device has run them.
    Where the two are close the host is the bottleneck (the device waits for work)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        function()
    issued = time.perf_counter()
    synchronize(device)
    done = time.perf_counter()
    return f"{(done - start) * 1000 / calls:7.3f}   (host issued them in {(issued - start) * 1000 / calls:.3f})"


def device_milliseconds(events) -> float:
    """The kernels' own time in a profile, counted as the profiler's table counts its total."""
    return sum(event.self_device_time_total for event in events
               if event.device_type == DeviceType.CUDA and not event.is_user_annotation) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ResNet20")
    parser.add_argument("--compile", choices=("on", "off"), default="on")
    parser.add_argument("--compile-mode", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--step-graph", choices=("on", "off"), default="off")
    parser.add_argument("--steps", type=int, default=TIMED_STEPS, help="steps timed per part")
    options = parser.parse_args()
    args = settings.parse_args(["--model", options.model, "--compile", options.compile, "--compile-mode",
                                options.compile_mode, "--device", options.device, "--step-graph", options.step_graph])
    runtime, model = setup(args, model=args.model, settings=vars(args), epochs=args.epochs)
    device = runtime.device
    step_model = runtime.compile(model)
    optimizer = make_optimizer(model, args, device)
    schedule = make_schedule(args, steps_per_epoch=390)
    random_images = torch.Generator().manual_seed(0)

    def loader(steps: int) -> data.DeviceLoader:
        return random_train_loader(args, device, steps, random_images)

    # One step throughout, as in a run (a captured step is captured once), over batches made before any is timed.
    train_step = passes.TrainStep(step_model, optimizer, loader(max(options.steps, PROFILED_STEPS)), runtime)
    if runtime.step_graph:
        graphs.capture_steps(train_step)

    def train_steps(steps: int) -> float:
        result = passes.train_one_epoch(train_step, schedule, runtime, StopSignals(), None, steps=steps)
        return result["epoch_seconds"] * 1000 / steps

    start = time.perf_counter()
    train_steps(3 + (graphs.WARMUP_STEPS if runtime.step_graph else 0))  # compilation, autotuning, the capture
    print(f"{args.model} on {runtime.describe()}, {runtime.precision}, {runtime.describe_compile()}, batch "
          f"{args.batch_size}; warm-up {time.perf_counter() - start:.1f} s; ms per step:", flush=True)
    steps = options.steps
    print(f"  whole step (train.py's):        {train_steps(steps):7.3f}  (step graph: {train_step.graph_mode})")

    batches = iter(loader(steps))
    print(f"  batch alone (crop, flip, norm): {milliseconds_per_call(lambda: next(batches), steps, device)}")
    images, labels = next(iter(loader(1)))

    def forward_backward() -> None:
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = F.cross_entropy(step_model(images), labels)
        loss.backward()

    print(f"  forward + loss + backward:      {milliseconds_per_call(forward_backward, steps, device)}")
    print(f"  update alone (optimizer.step):  {milliseconds_per_call(optimizer.step, steps, device)}")

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        wall = train_steps(PROFILED_STEPS)
    events = profiler.key_averages()
    if device.type == "cuda":
        print(f"  profiled step: {wall:.3f} wall, of which the device ran kernels "
              f"{device_milliseconds(events) / PROFILED_STEPS:.3f}")
        print(events.table(sort_by="self_device_time_total", row_limit=TABLE_ROWS, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=TABLE_ROWS, max_name_column_width=60))


if __name__ == "__main__":
    main()
