from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(2)


def tensor_split(n: int, num_classes: int = 3, size: int = 32, seed: int = 0):
    """Random but learnable data: the class shifts the mean of one channel."""
    import torch

    from autofreeze.data import TensorSplit

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[:, 0] += y.float().view(-1, 1, 1) - 1.0
    return TensorSplit(x, y)


@pytest.fixture
def tiny_data():
    return tensor_split(24, seed=0), tensor_split(12, seed=1)
