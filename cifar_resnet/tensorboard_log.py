"""--tensorboard: a run's curves as TensorBoard event files in its folder (<Model>/tensorboard/),
for `tensorboard --logdir results`.

Every point is logged at its training step (iteration), the x axis of the paper's Figure 6: the
training loss every LOSS_EVERY steps, and per epoch the losses, accuracies and learning rate.
At the end, the run's settings and final metrics go to the HParams tab. A resumed run purges
what the interrupted part logged after its checkpoint, so the curves go on without duplicates.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")


def hparam_value(value):
    """TensorBoard's hparams take numbers, strings and booleans: lists and None become text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardLog:
    def __init__(self, folder: Path, resumed_at_step: int) -> None:
        # Imported here: only --tensorboard needs the tensorboard package.
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events at or after it: those of the epoch the checkpoint does not hold.
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=resumed_at_step + 1 if resumed_at_step else None)

    def training_loss(self, step: int, loss: float) -> None:
        self.writer.add_scalar("loss_per_step/train", loss, step)

    def epoch(self, row: dict, step: int) -> None:
        """One epoch's CSV row, at the step it ended on."""
        for split in SPLITS:
            if f"{split}_loss" in row:
                self.writer.add_scalar(f"loss/{split}", row[f"{split}_loss"], step)
                self.writer.add_scalar(f"accuracy/{split}", row[f"{split}_acc"], step)
        self.writer.add_scalar("lr", row["lr"], step)
        self.writer.flush()

    def hparams(self, settings: dict, result: dict) -> None:
        """The settings beside the final metrics, for the HParams tab (in the subfolder hparams/)."""
        metrics = {f"hparam/{key}": result[key] for key in ("final_test_acc", "final_val_acc") if key in result}
        self.writer.add_hparams({key: hparam_value(value) for key, value in settings.items()}, metrics,
                                run_name="hparams", global_step=result["steps"])

    def close(self) -> None:
        self.writer.close()
