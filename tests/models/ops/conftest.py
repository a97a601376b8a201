import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny per-pixel ops: one intra-op thread avoids OpenMP spin contention on a shared 2-core box (up to 100x
    here). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
