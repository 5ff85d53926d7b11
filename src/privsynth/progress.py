"""Progress reporting that library code emits and front ends (CLI, service) render.

Library code calls :func:`report`; nothing happens unless a front end has
installed a listener with :func:`listen`. A context variable carries the listener, so concurrent jobs in one
process each report to their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long task: ``completed`` out of ``total`` (``None`` when unknown) for ``task``."""

    task: str
    completed: float
    total: float | None = None
    detail: str = ""


Listener = Callable[[ProgressEvent], None]

_listener: ContextVar[Listener | None] = ContextVar("privsynth_progress_listener", default=None)


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Send every progress event emitted inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report(task: str, completed: float, total: float | None = None, detail: str = "") -> None:
    """Emit a progress event to the installed listener, if any."""
    listener = _listener.get()
    if listener is not None:
        listener(ProgressEvent(task, completed, total, detail))
