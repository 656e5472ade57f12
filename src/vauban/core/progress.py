"""Progress switches: whether vauban's progress bars show (the CLI's ``--quiet``)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# Inside ``no_progress()`` no vauban progress bar shows, whatever a call asks for: the CLI's
# --quiet runs its command inside it. A context variable, not a module flag: it ends with the
# block and stays within the thread or task that entered it.
_PROGRESS_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("vauban_progress_off", default=False)


@contextlib.contextmanager
def no_progress() -> Iterator[None]:
    """No progress bars from vauban while the block runs."""
    token = _PROGRESS_OFF.set(True)
    try:
        yield
    finally:
        _PROGRESS_OFF.reset(token)


def progress_off() -> bool:
    """Whether the caller runs inside :func:`no_progress`."""
    return _PROGRESS_OFF.get()
