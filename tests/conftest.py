import os

import pytest
import torch

# Keep tests offline and reproducible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def reproducibility():
    torch.manual_seed(0)
    yield
