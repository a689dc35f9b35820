"""CIFAR-10 and CIFAR-100: find or download them, read the standard python batches safely, serve
batches on the device.

The whole uint8 data set lives on the training device. Every training epoch draws one random
permutation, and the augmentation (augment.py: the paper's pad-4 crop and flip, and the
options) and the normalisation run as a few batched tensor operations: no PIL, no DataLoader,
no worker processes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import numpy as np
import torch

from cifar_resnet import unpickler
from cifar_resnet.augment import Augmentation
from cifar_resnet.fields import printable

IMAGE_SHAPE = (3, 32, 32)
MAX_CLASS_NAME = 64  # characters; CIFAR-100's longest fine name has 13
ARCHIVE_SITE = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Source:
    """One of the two data sets: its archive, and the layout of the folder the archive holds."""

    name: str
    folder: str
    archive: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    official_md5: tuple[str, ...]  # of each train file, then each test file, in the release (torchvision's lists)
    label_key: str
    class_count: int
    classes: tuple[str, ...] = ()  # the class names, where fixed; else read from meta_file's names_key
    meta_file: str = ""
    names_key: str = ""

    @property
    def url(self) -> str:
        return ARCHIVE_SITE + self.archive


CIFAR10 = Source("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                 tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                 ("c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec", "54ebc095f3ab1f0389bbae665268c751",
                  "634d18415352ddfa80567beed471001a", "482c414d41f54cd18b22e5b47cb7c3cb", "40351d587109b95175f43aff81a1287e"),
                 "labels", 10,
                 classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
CIFAR100 = Source("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                  ("train",), ("test",), ("16019d7e3df5f24257cddd939b257f8d", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
                  "fine_labels", 100, meta_file="meta", names_key="fine_label_names")
SOURCES = {"cifar10": CIFAR10, "cifar100": CIFAR100}  # --dataset's choices


class DataError(Exception):
    """A problem with the data that the user can fix; the message says what and where."""


def find_or_download(root: Path, source: Source = CIFAR10) -> Path:
    """The source's batches folder under ``root`` (or ``root`` itself, if it is that folder),
    downloaded and extracted (its MD5 checked) if missing."""
    folder = Path(root) / source.folder
    if folder.is_dir():
        return folder
    if Path(root).name == source.folder and Path(root).is_dir():  # --data-dir named the batches folder itself
        return Path(root)
    # Imported here: only a missing data set needs the downloader.
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(source.url, str(root), md5=source.md5)
    except Exception as error:  # any network or archive failure ends in the same advice
        raise DataError(
            f"{source.name} is not in {folder} and the download failed ({type(error).__name__}: {error}). "
            f"Put {source.archive} from {source.url} in {root} (or its extracted {source.folder}/ "
            f"folder there), or point --data-dir at the folder that holds {source.folder}/."
        ) from None
    if not folder.is_dir():
        raise DataError(f"the downloaded archive did not contain {source.folder}/ (looked in {root})")
    return folder


def open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for reading, where it is a regular file (or a link to one): a pipe or a
    device in its place would block the reader, or never end."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a pipe does not wait for a writer
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise DataError(f"{path}: not a regular file (a pipe, a device or a folder)")
    return os.fdopen(descriptor, "rb")


def read_pickle(path: Path, source: Source, keys: set[str]) -> dict:
    """One of the source's pickled files, read with the allow-listed unpickler: a dict (bytes
    keys turned into text) holding at least ``keys``."""
    files = source.train_files + source.test_files + ((source.meta_file,) if source.meta_file else ())
    try:
        with open_regular_file(path) as file:
            content = unpickler.load(file)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a {source.name} folder holds {', '.join(files)}") from None
    except Exception as error:
        raise DataError(f"{path}: not a readable {source.name} file ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a dict, found {type(content).__name__}")
    content = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}
    missing = keys - content.keys()
    if missing:
        raise DataError(f"{path}: missing the key(s) {sorted(missing)}")
    return content


def read_batch(path: Path, source: Source = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 3 x 32 x 32 uint8) and labels (N int64) of one batch file, checked.

    Accepts both pickles of Python-2 strings (the original files) and of bytes keys; checksums
    are not required to match the originals, so any correct copy in this layout works.
    """
    batch = read_pickle(path, source, {"data", source.label_key})
    data = batch["data"]
    try:
        labels = np.asarray(batch[source.label_key])
    except (TypeError, ValueError):  # ragged or otherwise not an array of numbers
        raise DataError(f"{path}: {source.label_key!r} must be a list of integers") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be an N x 3072 uint8 array, found {type(data).__name__} {shape}")
    # (an empty list reads as float64: no label is a non-integer there)
    if labels.shape != (len(data),) or (len(labels) and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: {source.label_key!r} must be {len(data)} integers, found {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= source.class_count):
        raise DataError(f"{path}: labels must lie in 0..{source.class_count - 1}, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def read_class_names(folder: Path, source: Source) -> tuple[str, ...]:
    """The source's class names: fixed for CIFAR-10, read from the meta file for CIFAR-100."""
    if source.classes:
        return source.classes
    path = Path(folder) / source.meta_file
    names = read_pickle(path, source, {source.names_key})[source.names_key]
    if not (isinstance(names, list) and len(names) == source.class_count and all(map(is_class_name, names))):
        raise DataError(f"{path}: {source.names_key!r} must be a list of {source.class_count} names, each "
                        f"1 to {MAX_CLASS_NAME} printable characters")
    return tuple(names)


def is_class_name(name) -> bool:
    """A name that figures and logs can show: printable (no control or escape codes) and short."""
    return isinstance(name, str) and 0 < len(name) <= MAX_CLASS_NAME and name.isprintable()


def read_split(folder: Path, files: tuple[str, ...], source: Source = CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    """The concatenated images and labels of some batch files, as CPU tensors."""
    parts = [read_batch(Path(folder) / name, source) for name in files]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


@dataclass
class Split:
    images: torch.Tensor  # N x 3 x 32 x 32, uint8
    labels: torch.Tensor  # N, int64


@dataclass
class Dataset:
    train: Split
    test: Split
    classes: tuple[str, ...]
    files: dict  # fingerprint(): the folder, each batch file's MD5, and whether they are the official release
    val: Optional[Split] = None
    val_sha256: Optional[str] = None  # of the held-out indices: which images validated the run

    @property
    def record(self) -> dict:
        """What a run's record says of its data: the files, and which images validated it."""
        return {**self.files, "val_split_sha256": self.val_sha256}


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file, read a MiB at a time: MD5 to compare with the release's lists (not
    for security, so FIPS builds allow it), SHA-256 to pin a checkpoint."""
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(folder: Path, source: Source = CIFAR10) -> dict:
    """The MD5 of each batch file in ``folder``, and whether all are the official release's: a
    re-encoded or generated copy in the same format is told apart from CIFAR itself."""
    names = (*source.train_files, *source.test_files)
    md5 = {name: file_digest(Path(folder) / name) for name in names}
    return {"name": source.name, "folder": printable(str(folder)), "md5": md5,
            "official": list(md5.values()) == list(source.official_md5)}


def held_out_count(val_size: float, train_count: int) -> int:
    """``--val-size`` as a number of images: a count, or a fraction (0 < f < 1) of the training set."""
    count = round(val_size * train_count) if isinstance(val_size, float) else val_size
    if not 0 <= count < train_count or (isinstance(val_size, float) and count == 0):
        raise DataError(f"--val-size must lie in 0..{train_count - 1}, or be a fraction that holds at least one image "
                        f"out (the training set has {train_count} images), got {val_size}")
    return count


def load_dataset(folder: Path, source: Source = CIFAR10, val_size: float = 0, seed: int = 0,
                 subset: int = 0) -> Dataset:
    """Train and test sets and class names, with ``val_size`` training images (a count, or a
    fraction of them) held out, chosen by ``seed``; with ``subset``, of its smoke-run subset."""
    train = Split(*read_split(folder, source.train_files, source))
    test = Split(*read_split(folder, source.test_files, source))
    classes = read_class_names(folder, source)
    for split, files in ((train, source.train_files), (test, source.test_files)):
        if len(split.labels) == 0:
            raise DataError(f"{folder}: {', '.join(files)} hold no images")
    if subset:
        train, test = smoke_subset(train, subset), smoke_subset(test, max(1, subset // SUBSET_TEST_SHARE))
    val_size = held_out_count(val_size, len(train.labels))
    files = fingerprint(folder, source)
    if val_size == 0:
        return Dataset(train, test, classes, files)
    # The split depends only on the seed, never on the global random state.
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
    keep, held_out = order[val_size:], order[:val_size]
    return Dataset(
        Split(train.images[keep], train.labels[keep]),
        test,
        classes,
        files,
        Split(train.images[held_out], train.labels[held_out]),
        hashlib.sha256(held_out.numpy().astype("<i8").tobytes()).hexdigest(),
    )


SUBSET_TEST_SHARE = 5  # --subset N tests on N/5 images: CIFAR's own ratio of test to training images


def smoke_subset(split: Split, count: int) -> Split:
    """The first ``count`` images of a fixed shuffle of ``split``: the same for every run and seed, so
    smoke runs compare, and a mix of every class, where the files' own order might not be."""
    if count > len(split.labels):
        raise DataError(f"--subset asks for {count:,} images of a split that has {len(split.labels):,}")
    order = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(0))[:count]
    return Split(split.images[order], split.labels[order])


def random_split(count: int, classes: int, generator: torch.Generator) -> Split:
    """Random images and labels of the data sets' shapes, for benchmarks."""
    images = torch.randint(0, 256, (count, *IMAGE_SHAPE), dtype=torch.uint8, generator=generator)
    return Split(images, torch.randint(0, classes, (count,), generator=generator))


def pixel_moments(images: torch.Tensor, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean of x and of x^2 (3 x 32 x 32, float64, x in [0, 1]), a chunk at a time:
    50k images in float64 at once would take 1.2 GB."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    total_square = torch.zeros_like(total)
    for part in images.split(chunk):
        part = part.double().div_(255)
        total += part.sum(dim=0)
        total_square += part.square_().sum(dim=0)
    return total / len(images), total_square / len(images)


@dataclass
class Normalization:
    """x -> (x / 255 - mean) / std on uint8 images, folded into one multiply-add."""

    mean: torch.Tensor  # broadcastable to 3 x 32 x 32, in [0, 1] units
    std: torch.Tensor

    def __post_init__(self) -> None:
        # Worked out once, not per batch: x * scale + shift.
        self.scale = 1 / (255 * self.std)
        self.shift = -self.mean / self.std

    @classmethod
    def fit(cls, kind: str, images: torch.Tensor) -> "Normalization":
        """``kind`` "pixel" (the paper's) or "channel" (the seed repository's), fitted to ``images``."""
        return cls.per_pixel(images) if kind == "pixel" else cls.per_channel(images)

    @classmethod
    def per_pixel(cls, images: torch.Tensor) -> "Normalization":
        """The paper's: subtract the per-pixel mean image of the training set, no scaling."""
        mean, _ = pixel_moments(images)
        return cls(mean.float(), torch.ones(1))

    @classmethod
    def per_channel(cls, images: torch.Tensor) -> "Normalization":
        """The seed repository's: per-channel mean and standard deviation."""
        mean, mean_square = pixel_moments(images)
        channel_mean = mean.mean(dim=(1, 2), keepdim=True)
        channel_std = (mean_square.mean(dim=(1, 2), keepdim=True) - channel_mean**2).clamp(min=0).sqrt()
        if (channel_std * 255 < 0.5).any():  # less than half a grey level: nothing to divide by
            raise DataError("--normalize channel: a colour channel of the training images is constant; "
                            "use --normalize pixel")
        return cls(channel_mean.float(), channel_std.float())

    def to(self, device: torch.device) -> "Normalization":
        return Normalization(self.mean.to(device), self.std.to(device))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)


class DeviceLoader:
    """Batches of normalised images from a uint8 split that lives on the device.

    Training loaders shuffle, augment and drop the last partial batch, so every step has the
    same batch shape (compiled graphs never see a second shape); over many epochs each image
    is still seen equally often, because each epoch's permutation is fresh.

    With ``shard=(rank, count)`` (several processes, one run) every process draws the same
    permutation from ``generator`` and yields its own slice of each global batch, augmented with
    its own ``augment_generator``; together the slices are the one-process batch.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        normalization: Normalization,
        device: torch.device,
        train: bool,
        generator: Optional[torch.Generator] = None,
        memory_format: torch.memory_format = torch.contiguous_format,
        augmentation: Augmentation = Augmentation(),
        shard: tuple[int, int] = (0, 1),
        augment_generator: Optional[torch.Generator] = None,
    ) -> None:
        if train and generator is None:
            raise ValueError("a training loader needs a generator for its shuffling and augmentation")
        if train and batch_size > len(split.labels):
            raise DataError(f"--batch-size {batch_size} is larger than the training set ({len(split.labels)} images)")
        if batch_size % shard[1]:
            raise DataError(f"--batch-size {batch_size} (the global batch) does not divide among {shard[1]} processes")
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.normalization = normalization.to(device)
        self.device = device
        self.train = train
        self.generator = generator
        self.memory_format = memory_format
        self.augmentation = augmentation
        self.shard = shard
        self.augment_generator = augment_generator or generator

    def __len__(self) -> int:
        count = len(self.labels)
        return count // self.batch_size if self.train else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in self.indices():
            yield self.batch(index)

    def indices(self) -> Iterator[torch.Tensor]:
        """Each step's images, as indices into the split: a fresh shuffle of it per pass (training),
        or every image in order; this process's slice of each global batch."""
        if self.train:
            order = torch.randperm(len(self.labels), device=self.device, generator=self.generator)
        else:
            order = torch.arange(len(self.labels), device=self.device)
        rank, count = self.shard
        part = self.batch_size // count
        for step in range(len(self)):
            yield order[step * self.batch_size : (step + 1) * self.batch_size][rank * part : (rank + 1) * part]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at ``index``, augmented (training) and normalised, and their labels: device
        operations only, which a CUDA graph can capture (passes.TrainStep)."""
        images = self.images[index]
        if self.train:
            images = self.augmentation.on_pixels(images, self.augment_generator)
        images = self.normalization(images)
        if self.train:
            images = self.augmentation.on_normalized(images, self.augment_generator)
        return images.contiguous(memory_format=self.memory_format), self.labels[index]
