import os

import pytest
import torch

os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "17179869184")
# the cores shared among the pytest-xdist workers (pyproject.toml runs one per core), at most 2 each: the tests' ops
# are too small to gain from more
torch.set_num_threads(min(2, max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))))
if not torch.cuda.is_available():
    # Triton picks interpreter-or-compiler when it is first imported: set it before any test module imports it.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
