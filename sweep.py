"""What run.sh asks of Python, so that the sweep's model list and the meaning of a run's files
each live in one place.

    python sweep.py models                             # run.sh's default MODELS, in training order
    python sweep.py state RESULTS_DIR MODEL [DATASET]  # finished, resumable or new: what run.sh does with it
    python sweep.py folder RESULTS_DIR MODEL [DATASET] # where train.py puts that run
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from runfiles import RunFiles

# The paper's ResNets and plain nets (Table 6, Figure 6), the seed repository's ImageNet-style
# extras, and ResNet-1202 last, since it takes longer than all the others together.
SWEEP_MODELS = ("ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110", "Plain20", "Plain32", "Plain44",
                "Plain56", "ResNet18", "ResNet34", "ResNet50", "ResNet1202")
USAGE = "usage: python sweep.py models | python sweep.py {state,folder} RESULTS_DIR MODEL [DATASET]"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["models"]:
        print(" ".join(SWEEP_MODELS))
    elif len(argv) in (3, 4) and argv[0] in ("state", "folder") and argv[3:] in ([], ["cifar10"], ["cifar100"]):
        files = RunFiles.of(Path(argv[1]), *argv[2:])
        print(files.state() if argv[0] == "state" else files.folder)
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
