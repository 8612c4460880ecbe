import sys
from pathlib import Path

# tests/notebooks.py is a helper module shared by the Makefile and the layout tests.
sys.path.insert(0, str(Path(__file__).parent))
