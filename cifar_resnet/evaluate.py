"""--evaluate: a saved checkpoint's test accuracy, per-class accuracy and classification report,
and its confusion matrix in plots/ beside it. Architecture, options and normalisation come from
the file, so a checkpoint trained on a GPU evaluates on a CPU and needs no training data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from cifar_resnet import data, figures, hardware, passes
from cifar_resnet.checkpoints import load_checkpoint, rebuild_model
from cifar_resnet.errors import UsageError
from cifar_resnet.runfolder import RunFileError, own_folder


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    from sklearn.metrics import classification_report  # only evaluation needs scikit-learn

    path = Path(args.evaluate)
    # The checkpoint's data set, unless --dataset names another: then it is refused.
    checkpoint = load_checkpoint(path, args.model, to_resume=False,
                                 dataset=args.dataset if "dataset" in args.given else None)
    settings = checkpoint["args"]
    source = data.SOURCES[settings.get("dataset", "cifar10")]
    name = settings["model"]
    model = rebuild_model(checkpoint, path)
    # One pass over the test set: never long enough to repay compiling (unless --compile on).
    runtime = hardware.start(args, epochs=0)
    model = model.to(runtime.device, memory_format=hardware.MEMORY_FORMAT)
    folder = data.find_or_download(args.data_dir, source)
    test, classes = data.Split(*data.read_split(folder, source.test_files, source)), data.read_class_names(folder, source)
    normalization = data.Normalization(**checkpoint["normalization"])
    loader = passes.eval_loader(test, normalization, runtime.device)
    loss, accuracy, predictions = passes.evaluate(runtime.compile(model), loader, runtime)

    labels, predicted = test.labels.numpy(), predictions.numpy()
    per_class = {label: 100 * float((predicted[labels == index] == index).mean())
                 for index, label in enumerate(classes) if (labels == index).any()}
    print(f"{path}: {name} on {source.name}, epoch {checkpoint['epoch']}, {runtime.describe()}, {runtime.precision}")
    origin = where_from(checkpoint)
    if origin:
        print(origin)
    print(f"test accuracy: {accuracy:.2f}%  (error {100 - accuracy:.2f}%, loss {loss:.4f}, {len(labels)} images)")
    print("per-class accuracy, worst first:")
    for label, value in sorted(per_class.items(), key=lambda item: item[1]):
        print(f"  {label:>{max(map(len, classes))}}  {value:6.2f}%")
    print("most confused (true -> predicted: images): "
          + ", ".join(f"{true} -> {guess}: {count}" for true, guess, count in figures.most_confused(labels, predicted, classes)))
    print(classification_report(labels, predicted, labels=range(len(classes)), target_names=classes,
                                digits=4, zero_division=0))
    figure = path.parent / "plots" / f"{path.stem}_confusion_matrix.png"
    try:
        own_folder(figure.parent)  # a link there is replaced, never followed to another run's files
    except (OSError, RunFileError) as error:  # RunFileError: a file where plots/ belongs
        raise UsageError(f"cannot write the confusion matrix to {figure.parent} "
                         f"({getattr(error, 'strerror', None) or error})") from None
    figures.plot_confusion(labels, predicted, classes, figure, f"{name} ({path.name})")
    print(f"confusion matrix: {figure}")
    return {"model": name, "test_loss": loss, "test_acc": accuracy, "per_class_acc": per_class}


def where_from(checkpoint: dict) -> Optional[str]:
    """Where weights that no run of this folder trained came from, and what their source reports, to
    set beside the accuracy measured here; None for a run's own checkpoint."""
    if "imported" in checkpoint:
        record = checkpoint["imported"]
        reported = record["reported_test_acc"]
        return (f"imported from {record['source']} ({record['file']}, sha256 {record['sha256'][:16]}...)"
                + ("" if reported is None else f"; it reports {reported:.2f}% on the original test set"))
    if "exported" in checkpoint:
        record = checkpoint["exported"]
        start = record.get("started_from")
        return (f"exported from the run {record['run']}: final test accuracy {record['final_test_acc']:.2f}% after "
                f"{record['epochs']} epochs" + ("" if start is None else f", fine-tuned from {start['checkpoint']}"))
    return None
