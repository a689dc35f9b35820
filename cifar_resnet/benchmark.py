"""--benchmark: how fast a setting trains and evaluates here, on random images, writing nothing.

It times the functions a real run uses (passes.py, the device-resident loader and its batched
augmentation included) after a warm-up that absorbs compilation and autotuning, and projects
a full CIFAR-10 run from the rates.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Optional

import torch

from cifar_resnet import data, graphs, passes
from cifar_resnet.fields import plural
from cifar_resnet.hardware import Runtime, StopSignals, setup
from cifar_resnet.provenance import peak_memory_gib
from cifar_resnet.recipe import make_augmentation, make_mixing, make_optimizer, make_schedule
from cifar_resnet.runfolder import write_text
from resnet import count_macs

BENCHMARK_SECONDS = 5.0  # roughly how long training steps are timed (and, apart, evaluation)
CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000
MAX_TIMED_STEPS = 500
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets, by a part of the
# name torch.cuda.get_device_name gives; the first that matches counts (the H100 PCIe before the SXM).
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


def bf16_peak_tflops(device: torch.device) -> Optional[tuple[str, float]]:
    """The GPU's name and its dense bf16 peak, where BF16_PEAK_TFLOPS knows it."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next(((name, peak) for part, peak in BF16_PEAK_TFLOPS if part in name), None)


def training_tflops(macs_per_image: int, images_per_s: float) -> float:
    """What training achieves: a multiply-add is 2 FLOPs, and the backward pass costs about twice the
    forward (the gradients of the inputs and of the weights), so 3 x 2 x MACs an image."""
    return 6 * macs_per_image * images_per_s / 1e12


def compute_line(result: dict, peak: Optional[tuple[str, float]]) -> str:
    share = (f"{result['bf16_peak_share']:.1%} of the {peak[0]}'s dense bf16 peak ({peak[1]:g} TFLOP/s)" if peak
             else "the device's dense bf16 peak is not known here")
    return (f"compute:    {result['train_tflops']:.2f} TFLOP/s in training (3 x 2 x {result['macs_per_image'] / 1e6:.1f}M "
            f"MACs an image: convolutions and the classifier), {share}")


def peak_memory(runtime: Runtime) -> str:
    where = "GPU memory" if runtime.device.type == "cuda" else "CPU RSS"
    return f"{peak_memory_gib(runtime.device):.2f} GiB {where}"


def random_train_loader(args: argparse.Namespace, device: torch.device, steps: int,
                        images: torch.Generator) -> data.DeviceLoader:
    """``steps`` batches of random images (drawn from ``images``) of the data set's shape, shuffled,
    augmented and normalised as a run's are, by statistics of random images too: what the
    benchmarks (this one, benchmarks/step_profile.py and step_graph_equivalence.py) train on."""
    classes = data.SOURCES[args.dataset].class_count
    normalization = data.Normalization.fit(args.normalize, data.random_split(2 * args.batch_size, classes, images).images)
    return passes.train_loader(data.random_split(steps * args.batch_size, classes, images), args.batch_size,
                               normalization, torch.Generator(device=device).manual_seed(args.seed),
                               make_augmentation(args))


def run(args: argparse.Namespace) -> dict:
    runtime, model = setup(args, model=args.model, settings=vars(args), epochs=args.epochs)
    step_model = runtime.compile(model)
    eval_model = runtime.evaluation_model(model, step_model)
    optimizer = make_optimizer(model, args, runtime.device)
    classes = data.SOURCES[args.dataset].class_count
    all_train, test_images = ((args.subset, max(1, args.subset // data.SUBSET_TEST_SHARE)) if args.subset
                              else (CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES))
    val_images = data.held_out_count(args.val_size, all_train)
    train_images = all_train - val_images
    schedule = make_schedule(args, steps_per_epoch=train_images // args.batch_size)
    random_images = torch.Generator().manual_seed(args.seed)
    # One loader and one step throughout, as in a run: a captured step (--step-graph on) is captured once.
    loader = random_train_loader(args, runtime.device, MAX_TIMED_STEPS, random_images)
    eval_images = 10 * passes.eval_batch_size(runtime.device)
    test_loader = passes.eval_loader(data.random_split(eval_images, classes, random_images), loader.normalization,
                                     runtime.device)
    stop = StopSignals()  # not installed: train.main's own handler ends a benchmark at once, in one line
    mixing = make_mixing(args, classes)
    train_step = passes.TrainStep(step_model, optimizer, loader, runtime, mixing, args.label_smoothing)
    if runtime.step_graph:
        graphs.capture_steps(train_step)

    def train_steps(steps: int) -> dict:
        return passes.train_one_epoch(train_step, schedule, runtime, stop, None, steps=steps)

    start = time.perf_counter()
    train_steps(2 + (graphs.WARMUP_STEPS if runtime.step_graph else 0))  # compilation, autotuning, the capture
    passes.evaluate(eval_model, test_loader, runtime)
    warmup_seconds = time.perf_counter() - start
    probe = train_steps(2)
    steps = max(3, min(MAX_TIMED_STEPS, math.ceil(BENCHMARK_SECONDS * 2 / probe["epoch_seconds"])))
    train_rate = train_steps(steps)["train_images_per_s"]
    start, evaluated = time.perf_counter(), 0
    while evaluated == 0 or time.perf_counter() - start < BENCHMARK_SECONDS:
        passes.evaluate(eval_model, test_loader, runtime)
        evaluated += eval_images
    eval_rate = evaluated / (time.perf_counter() - start)

    epoch_seconds = (train_images // args.batch_size * args.batch_size) / train_rate + test_images / eval_rate
    epoch_seconds += val_images / eval_rate
    result = {"model": args.model, "device": runtime.describe(), "precision": runtime.precision,
              "compiled": runtime.compiled, "compile_mode": runtime.compile_mode, "batch_size": args.batch_size,
              # what ran, read after the timing: a compilation that failed, a capture refused
              "compilation": runtime.describe_compile(), "step_graph": train_step.graph_mode,
              "train_steps_timed": steps,
              "train_images_per_s": train_rate, "eval_images_per_s": eval_rate, "warmup_seconds": warmup_seconds,
              "epoch_seconds": epoch_seconds, "projected_run_seconds": warmup_seconds + args.epochs * epoch_seconds,
              "peak_memory": peak_memory(runtime), "macs_per_image": count_macs(model)}
    result["train_tflops"] = training_tflops(result["macs_per_image"], train_rate)
    peak = bf16_peak_tflops(runtime.device)
    result["bf16_peak_share"] = result["train_tflops"] / peak[1] if peak else None
    graph = f", step graph {train_step.graph_mode}" if runtime.step_graph else ""
    print(f"{args.model} on {result['device']}, {runtime.precision}, {result['compilation']}{graph}, "
          f"batch {args.batch_size}, recipe {args.recipe}")
    print(f"training:   {train_rate:,.0f} images/s ({steps} steps timed)")
    print(f"evaluation: {eval_rate:,.0f} images/s (batches of {passes.eval_batch_size(runtime.device)})")
    print(compute_line(result, peak))
    print(f"warm-up (compilation included): {warmup_seconds:.1f} s; peak memory: {result['peak_memory']}")
    whole = f"the --subset of {args.subset:,}" if args.subset else data.SOURCES[args.dataset].name
    print(f"projected: {epoch_seconds:.1f} s per epoch of {whole} (train + test), "
          f"{result['projected_run_seconds'] / 60:.1f} min for {plural(args.epochs, 'epoch')}")
    if args.benchmark_json is not None:  # for sweep.py estimate
        write_text(args.benchmark_json, json.dumps(result, indent=1) + "\n")
    return result
