"""Data tests: reading the standard batches safely, the split, normalisation and the device loader."""

import os
import pickle

import numpy as np
import pytest
import torch

from cifar_fixture import make_cifar, python2_style_batch, write_batch
from cifar_resnet import data


@pytest.fixture
def cifar(tmp_path):
    return make_cifar(tmp_path) / data.CIFAR10.folder


def test_reads_latin1_and_bytes_style_pickles_alike(tmp_path):
    labels = np.arange(20) % 10
    write_batch(tmp_path / "str_keys", labels, np.random.default_rng(1))
    write_batch(tmp_path / "bytes_keys", labels, np.random.default_rng(1), bytes_keys=True)
    images_a, labels_a = data.read_batch(tmp_path / "str_keys")
    images_b, labels_b = data.read_batch(tmp_path / "bytes_keys")
    assert images_a.shape == (20, 3, 32, 32) and images_a.dtype == np.uint8
    assert np.array_equal(images_a, images_b) and np.array_equal(labels_a, labels_b)
    assert labels_a.tolist() == labels.tolist()


def test_load_cifar10_returns_every_image_with_its_label(cifar):
    dataset = data.load_dataset(cifar)
    assert dataset.train.images.shape == (5 * 64, 3, 32, 32)
    assert dataset.test.images.shape == (100, 3, 32, 32)
    assert dataset.val is None
    assert dataset.train.labels.dtype == torch.int64


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Exploit(), "labels": []}, protocol=2))
    with pytest.raises(data.DataError, match=r"refused to load (posix|os)\.system"):
        data.read_batch(path)


def test_the_original_python2_layout_reads_exactly_as_numpy_reads_it(tmp_path):
    raw = bytes(range(256)) * 24  # two images
    content = python2_style_batch(raw, (2, 3072), [3, 7])
    (tmp_path / "test_batch").write_bytes(content)
    images, labels = data.read_batch(tmp_path / "test_batch")
    reference = pickle.loads(content, encoding="latin1")["data"]
    assert np.array_equal(images.reshape(2, -1), reference) and labels.tolist() == [3, 7]
    assert images.flags.writeable  # a copy, not a view of the file's bytes


FORGED_STRUCTURED = (3, "|", None, ("a",), None, 8, 1, 0)  # names (of fields) on a dtype, flags saying no objects


@pytest.mark.parametrize(
    "content,message",
    [
        # numpy would build a structured dtype from this state and then read pointers from the file.
        (python2_style_batch(bytes(6144), (2, 3072), [0, 1], dtype_state=FORGED_STRUCTURED),
         "structured, flexible or object dtypes are not allowed"),
        (python2_style_batch(bytes(6144), (2, 3072), [0, 1], dtype="O8"), "refused the dtype 'O8'"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1],
                       "filenames": np.zeros(2, dtype=[("a", "<i8")])}, protocol=2), "refused the dtype 'V8'"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1],
                       "filenames": np.array(["a", None], dtype=object)}, protocol=2), "refused the dtype 'O8'"),
        # A header claiming 1,000,000 images over 6 KB of data: refused before anything is allocated.
        (python2_style_batch(bytes(6144), (1_000_000, 3072), [0, 1]), "whose data is not 3072000000 bytes long"),
    ],
)
def test_a_forged_array_is_refused_before_numpy_builds_it(tmp_path, content, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=message):
        data.read_batch(path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"not a pickle at all", "not a readable CIFAR-10 file"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, [1, 2]]}), "'labels' must be a list of integers"),
        (pickle.dumps([1, 2, 3]), "expected a dict"),
        (pickle.dumps({"labels": [1]}), r"missing the key\(s\) \['data'\]"),
        (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), "N x 3072 uint8"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}), "N x 3072 uint8"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "must be 2 integers"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), r"labels must lie in 0\.\.9"),
    ],
)
def test_malformed_batch_gets_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "data_batch_3"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=message) as error:
        data.read_batch(path)
    assert str(path) in str(error.value)


def test_truncated_batch_is_reported(cifar):
    path = cifar / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(data.DataError, match="data_batch_2: not a readable CIFAR-10 file"):
        data.load_dataset(cifar)


def test_missing_folder_without_network_says_where_to_put_the_data(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def no_network(*_args, **_kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", no_network)
    with pytest.raises(data.DataError) as error:
        data.find_or_download(tmp_path / "nowhere")
    message = str(error.value)
    assert "cifar-10-python.tar.gz" in message and "--data-dir" in message and "network unreachable" in message


def test_validation_split_is_disjoint_and_fixed_by_the_seed(cifar):
    first = data.load_dataset(cifar, val_size=40, seed=3)
    again = data.load_dataset(cifar, val_size=40, seed=3)
    other = data.load_dataset(cifar, val_size=40, seed=4)
    assert len(first.val.labels) == 40 and len(first.train.labels) == 5 * 64 - 40
    assert torch.equal(first.val.images, again.val.images)
    assert not torch.equal(first.val.images, other.val.images)
    everything = data.load_dataset(cifar)
    rows = lambda images: {bytes(image.numpy().tobytes()) for image in images}  # noqa: E731
    assert rows(first.train.images) | rows(first.val.images) == rows(everything.train.images)
    assert not rows(first.train.images) & rows(first.val.images)


def test_a_smoke_subset_is_fixed_whatever_the_seed_and_a_fifth_as_large_for_testing(cifar):
    first = data.load_dataset(cifar, seed=0, subset=100)
    other_seed = data.load_dataset(cifar, seed=7, subset=100)
    assert (len(first.train.labels), len(first.test.labels)) == (100, 20)
    assert torch.equal(first.train.images, other_seed.train.images) and torch.equal(first.test.labels,
                                                                                 other_seed.test.labels)
    assert len(set(first.train.labels.tolist())) == 10  # a shuffle: every class, not the files' first rows
    held_out = data.load_dataset(cifar, val_size=20, subset=100)
    assert (len(held_out.train.labels), len(held_out.val.labels)) == (80, 20)  # validation comes out of the subset
    with pytest.raises(data.DataError, match="--subset asks for 1,000 images of a split that has 320"):
        data.load_dataset(cifar, subset=1000)


def test_validation_split_larger_than_the_training_set_is_refused(cifar):
    with pytest.raises(data.DataError, match="--val-size must lie in 0..319"):
        data.load_dataset(cifar, val_size=320)


def test_per_pixel_normalisation_centres_every_pixel(cifar):
    images = data.load_dataset(cifar).train.images
    normalized = data.Normalization.per_pixel(images)(images)
    assert normalized.mean(dim=0).abs().max() < 1e-5
    # Subtraction only: the spread stays that of the raw pixels in [0, 1] units.
    assert torch.allclose(normalized.std(dim=0), images.float().div(255).std(dim=0), atol=1e-5)


def test_per_channel_normalisation_gives_zero_mean_unit_std_per_channel(cifar):
    images = data.load_dataset(cifar).train.images
    normalization = data.Normalization.per_channel(images)
    normalized = normalization(images).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(normalized.mean(dim=1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalized.std(dim=1), torch.ones(3), atol=1e-4)


def test_training_loader_shuffles_full_batches_and_evaluation_loader_covers_everything(cifar):
    dataset = data.load_dataset(cifar)
    normalization = data.Normalization.per_pixel(dataset.train.images)
    cpu = torch.device("cpu")
    train = data.DeviceLoader(dataset.train, 48, normalization, cpu, True, torch.Generator().manual_seed(0))
    batches = list(train)
    assert len(train) == len(batches) == 320 // 48
    assert all(images.shape == (48, 3, 32, 32) and labels.shape == (48,) for images, labels in batches)
    first_epoch = torch.cat([labels for _, labels in batches])
    second_epoch = torch.cat([labels for _, labels in train])
    assert not torch.equal(first_epoch, second_epoch)

    test = data.DeviceLoader(dataset.test, 30, normalization, cpu, False)
    labels = torch.cat([labels for _, labels in test])
    assert len(test) == 4 and torch.equal(labels, dataset.test.labels)
    images = torch.cat([images for images, _ in test])
    assert torch.allclose(images, normalization(dataset.test.images))


def test_batch_larger_than_the_training_set_is_refused(cifar):
    dataset = data.load_dataset(cifar)
    normalization = data.Normalization.per_pixel(dataset.train.images)
    with pytest.raises(data.DataError, match="--batch-size 512 is larger than the training set"):
        data.DeviceLoader(dataset.train, 512, normalization, torch.device("cpu"), True, torch.Generator())


@pytest.mark.parametrize("emptied,message", [("test_batch", "test_batch hold no images"),
                                             (None, "data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
                                                    "data_batch_5 hold no images")])
def test_an_empty_split_is_refused_when_loaded(tmp_path, emptied, message):
    folder = make_cifar(tmp_path) / data.CIFAR10.folder
    for name in [emptied] if emptied else data.CIFAR10.train_files:
        (folder / name).write_bytes(pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "labels": []}, protocol=2))
    with pytest.raises(data.DataError, match=message):
        data.load_dataset(folder, val_size=10)


def test_per_channel_normalisation_of_constant_images_is_refused():
    with pytest.raises(data.DataError, match="constant"):
        data.Normalization.per_channel(torch.full((4, 3, 32, 32), 7, dtype=torch.uint8))
