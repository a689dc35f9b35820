"""Figures and tables of training runs, drawn from their files alone (no data set, model or GPU needed).

    python report.py results/ResNet56              # redraw results/ResNet56/plots/*.png
    python report.py results/ResNet20 results/ResNet56
    python report.py --summary results             # every finished run under results/ against the paper
    python report.py --records docs/runs --readme README.md   # the README's table of committed run records

Per run, in RUN/plots/: loss_acc_curves.png, lr_curve.png, confusion_matrix.png and
predictions.png (cifar_resnet/figures.py). --summary writes the sweep's comparison with the paper
(cifar_resnet/sweep_report.py): summary.md/.csv, depth_vs_error.png, figure6.png and figure7.png.
--records prints a table of the finished runs whose records (summary JSON, text, CSV) are kept
under a folder, or with --readme writes it into that file between its two marker lines.
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
from cifar_resnet.runfolder import RunFileError, read_small_file, write_text

MAX_README_BYTES = 1_000_000  # a README, not anything larger put in its place


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw the figures of training runs, or compare a sweep with the paper.")
    parser.add_argument("runs", nargs="*", type=Path, help="results folders of single runs, e.g. results/ResNet56")
    parser.add_argument("--summary", type=Path, metavar="RESULTS_DIR",
                        help="compare every finished run under RESULTS_DIR with the paper (summary.md/csv, figures)")
    parser.add_argument("--models", default="", help="with --summary: the sweep's models (run.sh's MODELS), so that "
                                                     "summary.md names each of their runs that did not finish")
    parser.add_argument("--seeds", default="", help="with --summary: the sweep's seeds (run.sh's SEEDS)")
    parser.add_argument("--records", type=Path, metavar="RECORDS_DIR",
                        help="a table of the finished runs whose records are kept under RECORDS_DIR (docs/runs)")
    parser.add_argument("--readme", type=Path, metavar="FILE",
                        help="with --records: write the table into FILE, between its marker lines, instead of printing it")
    args = parser.parse_args(argv)
    print_paths_as_they_are()
    if not args.runs and args.summary is None and args.records is None:
        parser.error("name run folders, or --summary RESULTS_DIR, or --records RECORDS_DIR")
    if args.readme is not None and args.records is None:
        parser.error("--readme goes with --records")
    try:
        for folder in args.runs:
            for path in figures.draw_run(folder):
                print(f"wrote {path}")
        if args.summary is not None:
            for path in sweep_report.write_sweep_report(args.summary, args.models.split(), args.seeds.split()):
                print(f"wrote {path}")
        if args.records is not None:
            write_records_table(args.records, args.readme)
    except (ReportError, RunFileError, OSError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("report.py: stopped; every file it was writing is as it was", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def write_records_table(records: Path, readme: Optional[Path]) -> None:
    """The table of the runs recorded under ``records``: printed, or written into ``readme``."""
    if readme is None:
        print(sweep_report.records_table(records, Path.cwd()), end="")
        return
    try:
        text = read_small_file(readme, MAX_README_BYTES).decode()
    except ValueError as error:  # too large, not a regular file, not UTF-8
        raise ReportError(f"cannot read {readme}: {error}") from None
    table = sweep_report.records_table(records, readme.parent)
    write_text(readme, sweep_report.with_records_table(text, table))
    print(f"wrote {readme}")


if __name__ == "__main__":
    sys.exit(main())
