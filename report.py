"""Figures and tables of training runs, drawn from their files alone (no data set, model or GPU needed).

    python report.py results/ResNet56              # redraw results/ResNet56/plots/*.png
    python report.py results/ResNet20 results/ResNet56
    python report.py --summary results             # every finished run under results/ against the paper

Per run, in RUN/plots/: loss_acc_curves.png, lr_curve.png, confusion_matrix.png and
predictions.png (cifar_resnet/figures.py). --summary writes the sweep's comparison with the paper
(cifar_resnet/sweep_report.py): summary.md/.csv, depth_vs_error.png, figure6.png and figure7.png.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from cifar_resnet import figures, sweep_report
from cifar_resnet.console import print_paths_as_they_are
from cifar_resnet.errors import ReportError
from cifar_resnet.runfolder import RunFileError


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the figures of training runs, or compare a sweep with the paper.")
    parser.add_argument("runs", nargs="*", type=Path, help="results folders of single runs, e.g. results/ResNet56")
    parser.add_argument("--summary", type=Path, metavar="RESULTS_DIR",
                        help="compare every finished run under RESULTS_DIR with the paper (summary.md/csv, figures)")
    parser.add_argument("--models", default="", help="with --summary: the sweep's models (run.sh's MODELS), so that "
                                                     "summary.md names each of their runs that did not finish")
    parser.add_argument("--seeds", default="", help="with --summary: the sweep's seeds (run.sh's SEEDS)")
    args = parser.parse_args(argv)
    print_paths_as_they_are()
    if not args.runs and args.summary is None:
        parser.error("name run folders, or --summary RESULTS_DIR")
    try:
        for folder in args.runs:
            for path in figures.draw_run(folder):
                print(f"wrote {path}")
        if args.summary is not None:
            for path in sweep_report.write_sweep_report(args.summary, args.models.split(), args.seeds.split()):
                print(f"wrote {path}")
    except (ReportError, RunFileError, OSError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("report.py: stopped; every file it was writing is as it was", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
