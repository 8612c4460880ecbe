import sys
from pathlib import Path

import pytest
from hypothesis import settings

# tests/notebooks.py is a helper module shared by the Makefile and the layout tests.
sys.path.insert(0, str(Path(__file__).parent))

# Property tests draw the same examples on every run (seeded, reproducible CI); the
# example database is off so a failure found once is not silently replayed elsewhere.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.load_profile("reproducible")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """torch on one thread in the tests: for their tiny models thread start-up dominates,
    and a loaded machine makes it much worse. Tests that never import torch are untouched."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
