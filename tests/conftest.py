"""Shared fixtures. The CPU is split into two logical devices before TensorFlow runs any op,
so MirroredStrategy can be tested with two replicas on a machine without GPUs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from zoo.recipes.engine.strategy import split_cpu  # noqa: E402

CPU_DEVICES = split_cpu(2)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """small_cnn trained on the digits with the recipe's defaults (shared by recipe and export tests)."""
    from zoo.recipes.engine.run import train

    run_dir = str(tmp_path_factory.mktemp("digits") / "run")
    return train("image_classify", run_dir, {"train.epochs": 15}, verbose=0)
