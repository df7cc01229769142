"""Test-wide settings: offline, deterministic, quiet."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread for every test: tiny models gain nothing from more, and on a shared
# 2-core machine OpenMP spinning makes small ops many times slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
    # Code under test may set the thread count (evaluation, training configs); restore one
    # thread so float results of later tests (compared with 1-thread torchrun ranks) do not
    # depend on which tests ran before them.
    torch.set_num_threads(1)
