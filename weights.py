"""Weights in and out of this project's checkpoints.

    python weights.py import akamaster resnet20.th imported/ResNet20_akamaster.pth
    python train.py --evaluate imported/ResNet20_akamaster.pth --precision fp32   # its test accuracy here

`import` turns akamaster/pytorch_resnet_cifar10's published .th files into checkpoints that
--evaluate and torch.hub read (cifar_resnet/peer_weights.py says how).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from cifar_resnet import peer_weights
from cifar_resnet.errors import UsageError
from cifar_resnet.runfolder import RunFileError, atomic_write


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Weights in and out of this project's checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="another project's published weights as a checkpoint")
    importing.add_argument("source", choices=("akamaster",), help="whose weights: akamaster/pytorch_resnet_cifar10")
    importing.add_argument("file", type=Path, help="the published file (resnet20.th, ...)")
    importing.add_argument("output", type=Path, help="the checkpoint to write (a new file)")
    args = parser.parse_args(argv)
    try:
        if args.output.exists():
            raise UsageError(f"{args.output} exists: name a new file")
        checkpoint = peer_weights.import_akamaster(args.file)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output, lambda file: torch.save(checkpoint, file))
    except (UsageError, RunFileError, OSError) as error:
        print(f"weights.py: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {checkpoint['args']['model']} from {peer_weights.AKAMASTER} "
          f"(sha256 {checkpoint['imported']['sha256'][:16]}...); python train.py --evaluate {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
