import os
import signal
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONVZOO_SHARED", REPO.parent / "shared"))

# Under pytest-xdist every worker gets one thread: two workers on two cores, no oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the CLI subprocesses the tests start
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The suite compares numbers bit for bit (resume, torchrun, converters), so the default precision
# is fp32 here; the bf16/channels_last defaults and their agreement with fp32 are tested on their
# own in test_accel.py. Subprocesses inherit this.
os.environ["CONVZOO_PRECISION"] = "fp32"

from helpers import CIFAR10_SMALL, load_paper_numbers  # noqa: E402, F401  (after the environment is set; CIFAR10_SMALL re-exported)


@pytest.fixture(scope="module")
def tiny_models_one_thread():
    """The test-only models registered for a module, on one thread: these models are too small
    to gain from two, and on a loaded 2-core machine two threads were measured 4x slower
    (OpenMP threads waiting on each other)."""
    import tiny_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tiny_models.registered():
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared: only for the large benchmark data (the full CIFAR-10, imagenet-samples.tar);
    a test that needs it skips with this reason in a clone without it."""
    if not SHARED.is_dir():
        pytest.skip(f"large benchmark data: ../shared not found at {SHARED} (set CONVZOO_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def paper_numbers() -> dict:
    return load_paper_numbers()


@pytest.fixture(autouse=True)
def signal_handlers_restored(request):
    """A test that leaves a SIGINT/SIGTERM handler behind changes what later tests in the same
    worker see (a Ctrl-C that no longer raises): put the handlers back, and name the test."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        if signal.getsignal(s) is not handler:
            warnings.warn(
                f"{request.node.nodeid} left a {signal.Signals(s).name} handler; restored", stacklevel=1
            )
            signal.signal(s, handler)
