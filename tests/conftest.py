"""Shared fixtures: tiny CIFAR-format data and one short training run, made once per session."""

import pytest

import train
from cifar_fixture import make_cifar, run_args


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def two_epoch_run(data_dir, tmp_path_factory):
    """The folder of a finished 2-epoch ResNet-20 run; tests must not change it."""
    results = tmp_path_factory.mktemp("results")
    assert train.main(run_args(data_dir, results, "--epochs", "2")) == 0
    return results / "ResNet20"
