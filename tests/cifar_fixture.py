"""Tiny data sets in CIFAR-10's standard python layout, and train.py arguments to use them, for tests."""

import pickle
from pathlib import Path

import numpy as np

from data import FOLDER, TEST_FILES, TRAIN_FILES


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable images: each class has its own colour and a bright square in its own place."""
    count = len(labels)
    images = rng.integers(0, 60, size=(count, 3, 32, 32), dtype=np.int64)
    colours = np.array([[(c * 37) % 200, (c * 91) % 200, (c * 53) % 200] for c in range(10)])
    images += colours[labels][:, :, None, None]
    for index, label in enumerate(labels):
        row, column = divmod(int(label), 5)
        images[index, :, 4 + 12 * row : 12 + 12 * row, 2 + 6 * column : 6 + 6 * column] = 255
    return images.clip(0, 255).astype(np.uint8).reshape(count, -1)


def write_batch(path: Path, labels: np.ndarray, rng: np.random.Generator, bytes_keys: bool = False) -> None:
    batch = {"batch_label": "tiny", "labels": labels.tolist(), "data": class_images(labels, rng),
             "filenames": [f"{i}.png" for i in range(len(labels))]}
    if bytes_keys:
        batch = {key.encode(): value for key, value in batch.items()}
    with open(path, "wb") as file:
        pickle.dump(batch, file, protocol=2)


def make_cifar(root: Path, per_batch: int = 64, test_size: int = 100, seed: int = 0, bytes_keys: bool = False) -> Path:
    """Write ROOT/cifar-10-batches-py/ with balanced labels; returns ROOT."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_FILES:
        write_batch(folder / name, rng.permutation(np.arange(per_batch) % 10), rng, bytes_keys)
    for name in TEST_FILES:
        write_batch(folder / name, rng.permutation(np.arange(test_size) % 10), rng, bytes_keys)
    return Path(root)


def run_args(data_dir: Path, results_dir: Path, *extra: str) -> list[str]:
    """train.py arguments for a ResNet-20 run on make_cifar's data (320 images, 10 steps an epoch)."""
    return ["--model", "ResNet20", "--batch-size", "32", "--data-dir", str(data_dir),
            "--results-dir", str(results_dir), *extra]


def python2_style_batch(images: bytes, shape: tuple, labels: list, dtype: str = "u1",
                        dtype_state: tuple = (3, "|", None, None, None, -1, -1, 0)) -> bytes:
    """A batch pickled as the original CIFAR files are (Python 2, numpy.core, raw bytes as a str),
    written opcode by opcode so that a test can also forge what numpy itself would never write."""
    import pickle as p

    def text(value: str) -> bytes:
        encoded = value.encode("latin1")
        return p.BINSTRING + len(encoded).to_bytes(4, "little") + encoded

    def item(value) -> bytes:
        if value is None:
            return p.NONE
        if isinstance(value, str):
            return text(value)
        if isinstance(value, int):
            return p.BININT + value.to_bytes(4, "little", signed=True)
        if isinstance(value, tuple):
            return p.MARK + b"".join(item(part) for part in value) + p.TUPLE
        raise TypeError(value)

    array = (p.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + p.GLOBAL + b"numpy\nndarray\n"
             + item((0,)) + text("b") + p.TUPLE3 + p.REDUCE
             + p.MARK + item(1) + item(shape)
             + p.GLOBAL + b"numpy\ndtype\n" + text(dtype) + item(0) + item(1) + p.TUPLE3 + p.REDUCE
             + item(dtype_state) + p.BUILD
             + p.NEWFALSE + p.BINSTRING + len(images).to_bytes(4, "little") + images + p.TUPLE + p.BUILD)
    return (p.PROTO + b"\x02" + p.EMPTY_DICT + p.MARK + text("data") + array
            + text("labels") + p.EMPTY_LIST + p.MARK + b"".join(item(label) for label in labels) + p.APPENDS
            + p.SETITEMS + p.STOP)
