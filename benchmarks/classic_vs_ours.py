"""Epochs of the classic CIFAR-10 pipeline against this project's default path, back to back.

    python benchmarks/classic_vs_ours.py --data-dir data                    # ResNet20 and ResNet56, 3 epochs each
    python benchmarks/classic_vs_ours.py --data-dir data --models ResNet20 --epochs 2

classic      what the usual scripts (and the seed repository) do: a torchvision-style Dataset that hands
             out PIL images, per-image RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and
             Normalize, a DataLoader with 2 worker processes, fp32, NCHW, eager, SGD, loss.item()
             every step.
ours-eager   train.py's Training with --compile off: device-resident data, batched augmentation,
             channels_last, bf16 autocast where the hardware is fast at it, fused SGD, one sync per epoch.
ours         the same with --compile on, which is what `--compile auto` picks for a full run.
ours-graph   the same with --step-graph on: the whole training step replayed as one CUDA graph (on a
             GPU, where it is among the default pipelines).

An epoch is training on the 50k training images plus evaluating the 10k test images. Printed per
pipeline: every epoch's seconds, the first epoch including set-up (data loading, compilation), the
steady state (the median of epochs 2..N), training images/s, and the steady-state ratio to classic.
Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train  # noqa: E402
from cifar_resnet import data  # noqa: E402
from cifar_resnet.hardware import StopSignals, describe_device, pick_device, setup  # noqa: E402
from resnet import build_model  # noqa: E402

# The seed repository's per-channel statistics of the CIFAR-10 training set.
CHANNEL_MEAN, CHANNEL_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
WORKERS = 2


class PilCifar(Dataset):
    """CIFAR-10 the torchvision way: one PIL image per item, transformed on a worker."""

    def __init__(self, split: data.Split, transform) -> None:
        self.images = np.ascontiguousarray(split.images.permute(0, 2, 3, 1).numpy())  # N x 32 x 32 x 3
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def classic_epochs(model_name: str, dataset: data.Dataset, device: torch.device, epochs: int) -> list[float]:
    """Seconds of each classic epoch; the first includes building the loaders and the model."""
    start = time.perf_counter()
    normalize = transforms.Normalize(CHANNEL_MEAN, CHANNEL_STD)
    train_set = PilCifar(dataset.train, transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    test_set = PilCifar(dataset.test, transforms.Compose([transforms.ToTensor(), normalize]))
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=128, shuffle=True, num_workers=WORKERS, pin_memory=pin)
    test_loader = DataLoader(test_set, batch_size=100, shuffle=False, num_workers=WORKERS, pin_memory=pin)
    model = build_model(model_name).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    seconds = []
    for _ in range(epochs):
        model.train()
        running_loss = 0.0
        for images, labels in train_loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in test_loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                correct += (model(images).argmax(dim=1) == labels).sum().item()
        seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
    return seconds


# This project's pipelines: train.py's flags for each
OURS = {"ours-eager": ["--compile", "off"], "ours": ["--compile", "on"],
        "ours-graph": ["--compile", "on", "--step-graph", "on"]}


def our_epochs(model_name: str, dataset: data.Dataset, data_dir: Path, flags: list[str], epochs: int) -> list[float]:
    """Seconds of each epoch of train.py's own loop; the first includes set-up and compilation."""
    start = time.perf_counter()
    args = train.parse_args(["--model", model_name, "--data-dir", str(data_dir), *flags])
    runtime, model = setup(args, model=args.model, settings=vars(args), epochs=args.epochs)
    training = train.Training(args, runtime, model, dataset)
    stop = StopSignals()
    seconds = []
    for _ in range(epochs):
        training.run_epoch(stop)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
    return seconds


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help=f"folder holding {data.CIFAR10.folder}/")
    parser.add_argument("--models", nargs="+", default=["ResNet20", "ResNet56"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per pipeline; the steady state is epochs 2..N")
    parser.add_argument("--pipelines", nargs="+", choices=["classic", *OURS],
                        help="default: classic, ours-eager, ours, and ours-graph on a GPU")
    args = parser.parse_args(argv)
    device = pick_device("auto")
    pipelines = args.pipelines or ["classic", "ours-eager", "ours", *(["ours-graph"] if device.type == "cuda" else [])]
    dataset = data.load_dataset(data.find_or_download(args.data_dir))
    train_images = len(dataset.train.labels) // 128 * 128
    print(f"device: {describe_device(device)}; {args.epochs} epochs per pipeline", flush=True)
    for model_name in args.models:
        steady = {}
        for pipeline in pipelines:
            if pipeline == "classic":
                seconds = classic_epochs(model_name, dataset, device, args.epochs)
            else:
                seconds = our_epochs(model_name, dataset, args.data_dir, OURS[pipeline], args.epochs)
            steady[pipeline] = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
            ratio = (f", {steady[pipeline] / steady['classic']:.2f} x classic"
                     if "classic" in steady and pipeline != "classic" else "")
            print(f"{model_name} {pipeline:<10} epochs (s): {', '.join(f'{s:.1f}' for s in seconds)}; "
                  f"first with set-up {seconds[0]:.1f} s; steady {steady[pipeline]:.1f} s "
                  f"(~{train_images / steady[pipeline]:.0f} training images/s incl. evaluation){ratio}", flush=True)


if __name__ == "__main__":
    main()
