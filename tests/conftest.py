from __future__ import annotations

import os

import pytest

from autofreeze.testing import tiny_split as tensor_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def tiny_data():
    return tensor_split(24, seed=0), tensor_split(12, seed=1)
