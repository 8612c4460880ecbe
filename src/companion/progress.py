"""When to show a progress bar: in a terminal yes, in the built book and in CI logs no."""

from __future__ import annotations

import os
import sys

#: ``COMPANION_PROGRESS=1`` forces progress bars on, ``0`` forces them off.
PROGRESS_ENV = "COMPANION_PROGRESS"


def show_progress(progress: bool | None) -> bool:
    """``progress`` if given, else ``COMPANION_PROGRESS`` (0 or 1), else whether stdout is a TTY."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get(PROGRESS_ENV)
    if env in ("0", "1"):
        return env == "1"
    return sys.stdout.isatty()
