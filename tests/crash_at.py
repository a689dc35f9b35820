"""Run train.py and kill it with SIGKILL at an exact point of its writes: a test-only hook, so that
a test's crash lands where the test says, not wherever a timer happens to fall on a loaded machine.

    python tests/crash_at.py NAME COUNT WHEN [train.py arguments...]

The crash comes at the COUNT-th rename onto a file whose name ends with NAME (``_last.pth``,
``_results.csv``) in this process. Every file a run writes is committed by such a rename
(runfolder.atomic_write, runfolder.link_atomically), so WHEN ``during`` leaves what a kill inside a
write leaves (the new bytes complete in their temporary file, not yet renamed) and ``after`` what
a kill between two writes leaves (the file in place, the next one not begun).
"""

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEN = ("during", "after")


def crash_at(name: str, count: int, when: str) -> None:
    """Make os.replace kill this process at the COUNT-th rename onto a file named ``*NAME``."""
    replace, seen = os.replace, 0

    def replace_then_maybe_die(source, destination, **kwargs):
        nonlocal seen
        matches = str(destination).endswith(name)
        seen += matches
        crash = matches and seen == count
        if crash and when == "during":
            os.kill(os.getpid(), signal.SIGKILL)
        replace(source, destination, **kwargs)
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_maybe_die


def main() -> None:
    name, count, when, *train_args = sys.argv[1:]
    if when not in WHEN or not count.isdigit():
        sys.exit(f"usage: {__doc__.splitlines()[3].strip()}")
    crash_at(name, int(count), when)
    sys.argv = [str(ROOT / "train.py"), *train_args]
    sys.path.insert(0, str(ROOT))
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
