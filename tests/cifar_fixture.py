"""Tiny data sets in CIFAR-10's and CIFAR-100's standard python layouts, and train.py arguments to
use them, for tests."""

import pickle
from pathlib import Path

import numpy as np

from cifar_resnet.data import CIFAR10, CIFAR100, Source


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable images: each class has its own colour and a bright square in its own place."""
    count = len(labels)
    images = rng.integers(0, 60, size=(count, 3, 32, 32), dtype=np.int64)
    colours = np.array([[(c * 37) % 200, (c * 91) % 200, (c * 53) % 200] for c in range(int(labels.max()) + 1)])
    images += colours[labels][:, :, None, None]
    for index, label in enumerate(labels):
        row, column = divmod(int(label) % 10, 5)
        images[index, :, 4 + 12 * row : 12 + 12 * row, 2 + 6 * column : 6 + 6 * column] = 255
    return images.clip(0, 255).astype(np.uint8).reshape(count, -1)


def write_pickle(path: Path, content: dict, bytes_keys: bool = False) -> None:
    if bytes_keys:
        content = {key.encode(): value for key, value in content.items()}
    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=2)


def write_batch(path: Path, labels: np.ndarray, rng: np.random.Generator, bytes_keys: bool = False,
                source: Source = CIFAR10) -> None:
    batch = {"batch_label": "tiny", source.label_key: labels.tolist(), "data": class_images(labels, rng),
             "filenames": [f"{i}.png" for i in range(len(labels))]}
    if source is CIFAR100:
        batch["coarse_labels"] = (labels // 5).tolist()
    write_pickle(path, batch, bytes_keys)


def make_cifar(root: Path, per_batch: int = 64, test_size: int = 100, seed: int = 0, bytes_keys: bool = False,
               source: Source = CIFAR10) -> Path:
    """Write ROOT/<the source's folder>/ with balanced labels (CIFAR-100's in one 'train' file of
    5 x per_batch images, and its 'meta' with 100 fine names); returns ROOT."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / source.folder
    folder.mkdir(parents=True, exist_ok=True)
    train_size = per_batch * 5 // len(source.train_files)
    for name in source.train_files:
        write_batch(folder / name, rng.permutation(np.arange(train_size) % source.class_count), rng, bytes_keys, source)
    for name in source.test_files:
        write_batch(folder / name, rng.permutation(np.arange(test_size) % source.class_count), rng, bytes_keys, source)
    if source.meta_file:
        names = [f"fine{index:02d}" for index in range(source.class_count)]
        write_pickle(folder / source.meta_file, {source.names_key: names, "coarse_label_names": names[:20]}, bytes_keys)
    return Path(root)


# The host pinned: on a GPU or a CPU with fast bf16, "auto" would choose other kernels and another
# precision than the suite's checks were written for. A test about those choices overrides them.
PINNED_HOST = ("--device", "cpu", "--precision", "fp32")


def run_args(data_dir: Path, results_dir: Path, *extra: str) -> list[str]:
    """train.py arguments for a ResNet-20 run on make_cifar's data (320 images, 10 steps an epoch),
    on the CPU in fp32 unless ``extra`` says otherwise (the last of a repeated flag counts)."""
    return ["--model", "ResNet20", "--batch-size", "32", *PINNED_HOST, "--data-dir", str(data_dir),
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
