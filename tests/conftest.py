"""Shared pytest fixtures and markers."""
import os
from pathlib import Path

# Tests run 2 threads on a shared machine: passive waits keep that near one thread's speed when the other
# core is busy (figures in dnnlib/threads.py). Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GANFORMER_SHARED", REPO.parent / "shared"))
REF_PT = SHARED / "reference" / "official-pytorch"
REF_TF = SHARED / "reference" / "official-tf"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running test")
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    # `slow` tests run only when asked for: GANFORMER_SLOW=1, or -m with an expression naming slow.
    if not os.environ.get("GANFORMER_SLOW") and "slow" not in (config.getoption("markexpr") or ""):
        slow = pytest.mark.skip(reason="slow test: set GANFORMER_SLOW=1 (or -m slow) to run it")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny float64 gradchecks stall on busy machines); restore after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
