"""Whether the training step replayed as one CUDA graph (--step-graph on) is the step as written:
the same weights, BatchNorm statistics and momentum after the same steps.

    python benchmarks/step_graph_equivalence.py --model ResNet20 --steps 40
    python benchmarks/step_graph_equivalence.py --model ResNet110 --precision bf16

Runs the paper's step twice from the same seed on random images, eager (the capture alone is
under test, not the compiler), with deterministic kernels: once uncaptured, once through
graphs.py (its warm-up steps, the capture, then replays), the rate dropped tenfold half-way as a
schedule drops it (written into the device tensor the graph reads). Prints the largest difference
of every kind of state, and the two runs' summed loss and right answers; a faithful capture
differs by 0 in fp32. Needs one CUDA device for the capture: elsewhere both runs are uncaptured,
which checks this script and nothing more.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# cuBLAS is deterministic only with its workspace fixed, before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_resnet import graphs, hardware, passes, settings  # noqa: E402
from cifar_resnet.benchmark import random_train_loader  # noqa: E402
from cifar_resnet.recipe import make_optimizer  # noqa: E402
from resnet import build_model  # noqa: E402

BATCH = 128  # the paper's


def final_state(model_name: str, steps: int, device: torch.device, precision: str, capture: bool) -> tuple[dict, str]:
    """Every weight, BatchNorm statistic and momentum buffer after ``steps`` steps, and the running
    sums, by name; and the step's graph mode ("on", or "off" and why)."""
    args = settings.parse_args(["--model", model_name, "--batch-size", str(BATCH)])
    torch.manual_seed(0)
    model = build_model(model_name).to(device, memory_format=hardware.MEMORY_FORMAT)
    optimizer = make_optimizer(model, args, device)
    loader = random_train_loader(args, device, steps, torch.Generator().manual_seed(0))
    runtime = hardware.Runtime(device, precision, None, step_graph=capture)
    step = passes.TrainStep(model, optimizer, loader, runtime)
    if capture:
        graphs.capture_steps(step)
    model.train()
    for number, index in enumerate(loader.indices()):
        step.set_rate(args.lr if number < steps // 2 else args.lr / 10)
        step.take(index)
    momentum = {f"momentum.{name}": optimizer.state[parameter]["momentum_buffer"]
                for name, parameter in model.named_parameters()}
    state = {**model.state_dict(), **momentum, "loss_sum": step.loss_sum, "correct": step.correct}
    return {name: tensor.detach().cpu() for name, tensor in state.items()}, step.graph_mode


def largest_differences(first: dict, second: dict) -> dict[str, float]:
    """The largest absolute difference per kind of state: weights, BatchNorm's running statistics
    and batch counts, momentum buffers, and the running sums."""
    kinds: dict[str, float] = {}
    for name, tensor in first.items():
        kind = ("momentum" if name.startswith("momentum.") else "running sums" if name in ("loss_sum", "correct")
                else "BatchNorm statistics" if "running_" in name or "num_batches" in name else "weights")
        difference = (tensor.double() - second[name].double()).abs().max().item()
        kinds[kind] = max(kinds.get(kind, 0.0), difference)
    return kinds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ResNet20")
    parser.add_argument("--steps", type=int, default=40, help="steps of each run (the capture is made at the fourth)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--device", default="auto")
    options = parser.parse_args(argv)
    device = hardware.pick_device(options.device)
    hardware.choose_kernels(deterministic=True, device=device)
    capture = device.type == "cuda"
    written, _ = final_state(options.model, options.steps, device, options.precision, capture=False)
    replayed, mode = final_state(options.model, options.steps, device, options.precision, capture=capture)
    print(f"{options.model}, {options.steps} steps of {BATCH} on {hardware.describe_device(device)}, "
          f"{options.precision}, eager, deterministic kernels; second run's step graph: {mode if capture else 'off (no CUDA)'}")
    for kind, difference in largest_differences(written, replayed).items():
        print(f"  largest difference, {kind}: {difference:.3g}")
    for name in ("loss_sum", "correct"):
        print(f"  {name}: {written[name].item():.6g} uncaptured, {replayed[name].item():.6g} {'captured' if capture else 'again'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
