"""Weights in and out of this project's checkpoints.

    python weights.py import akamaster resnet20.th imported/ResNet20_akamaster.pth
    python weights.py import chenyaofo cifar100_resnet56-f2eff4c8.pt imported/ResNet56_chenyaofo_cifar100.pth
    python train.py --evaluate imported/ResNet20_akamaster.pth --precision fp32   # its test accuracy here
    python weights.py export results/ResNet56                  # exported/ResNet56-<sha256[:8]>.pth + manifest.jsonl

`import` turns akamaster/pytorch_resnet_cifar10's .th files and chenyaofo/pytorch-cifar-models'
.pt files into checkpoints that --evaluate, --init-from and torch.hub read
(cifar_resnet/peer_weights.py says how); `export` writes a finished run's final model as a
weights file that torch.hub loads by name from the manifest beside it (cifar_resnet/export.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from cifar_resnet import export, peer_weights
from cifar_resnet.errors import OneLineParser, UsageError
from cifar_resnet.runfolder import RunFileError, atomic_write, failures_named


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="weights.py", description="Weights in and out of this project's checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="another project's published weights as a checkpoint")
    importing.add_argument("source", choices=tuple(peer_weights.PUBLISHERS),
                           help=" or ".join(f"{key}: {publisher.name}" for key, publisher in peer_weights.PUBLISHERS.items()))
    importing.add_argument("file", type=Path, help="the published file (resnet20.th, cifar10_resnet20-4118986f.pt, ...)")
    importing.add_argument("output", type=Path, help="the checkpoint to write (a new file)")
    exporting = commands.add_parser("export", help="a finished run's final model as weights others load by name")
    exporting.add_argument("run", type=Path, help="the run's folder (results/ResNet56, say)")
    exporting.add_argument("--to", type=Path, default=Path("exported"),
                           help=f"folder of the weights and their {export.MANIFEST} (default: %(default)s)")
    exporting.add_argument("--name", help="the name in the manifest (default: the model's, with _cifar100 on CIFAR-100)")
    return parser


def import_weights(args: argparse.Namespace) -> None:
    if args.output.exists():
        raise UsageError(f"{args.output} exists: name a new file")
    checkpoint = peer_weights.import_weights(args.source, args.file)
    with failures_named(args.output.parent):
        args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output, lambda file: torch.save(checkpoint, file))
    record, settings = checkpoint["imported"], checkpoint["args"]
    print(f"wrote {args.output}: {settings['model']} on {settings['dataset']} from {record['source']} "
          f"(sha256 {record['sha256'][:16]}...); python train.py --evaluate {args.output}")


def export_weights(args: argparse.Namespace) -> None:
    entry = export.export(args.run, args.to, args.name)
    print(f"wrote {args.to / entry['file']} and its line in {args.to / export.MANIFEST}:")
    print(json.dumps(entry))


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        (import_weights if args.command == "import" else export_weights)(args)
    except (UsageError, RunFileError, OSError) as error:
        print(f"weights.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
