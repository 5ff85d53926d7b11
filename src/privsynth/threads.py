"""How many torch threads a training or sampling run uses: shared by the deep synthesizers and the local LLM."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def threads() -> int:
    """Torch threads to use: the cores this process may run on, at most 2, and 1 when they are already busy.

    OpenMP threads spin while they wait for each other; on cores that other processes keep busy two threads
    ran a training step ten times slower than one.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    if os.getloadavg()[0] >= cores:
        return 1
    return max(1, min(2, cores))


@contextmanager
def torch_threads() -> Iterator[None]:
    """Run the block with :func:`threads` torch threads, restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)
