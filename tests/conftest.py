import sys
from pathlib import Path

from hypothesis import settings

# tests/notebooks.py is a helper module shared by the Makefile and the layout tests.
sys.path.insert(0, str(Path(__file__).parent))

# Property tests draw the same examples on every run (seeded, reproducible CI); the
# example database is off so a failure found once is not silently replayed elsewhere.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.load_profile("reproducible")
