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


@pytest.fixture
def record_devices(monkeypatch):
    """``record_devices(*modules)`` replaces ``to_numpy`` in those modules by a stand-in that
    records the device of every tensor it is given (and returns zeros); returns that list."""
    import numpy as np

    def install(*modules):
        devices = []

        def fake(tensor):
            devices.append(tensor.device)
            return np.zeros(tuple(tensor.shape))

        for module in modules:
            monkeypatch.setattr(module, "to_numpy", fake)
        return devices

    return install
