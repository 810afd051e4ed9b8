"""Keep the objects that exist before a run out of the garbage collector's passes during it.

A large run adds a few tracked objects per task (its results), which sets off full
collections; each walks every object in the process again, the project and its tasks
included, and on a 10,000-task run they cost more than the scheduling itself. While a
run is in progress the objects that existed before it are moved to the permanent
generation (``gc.freeze``), and moved back (``gc.unfreeze``) when the last concurrent
run ends: nothing is lost, cyclic garbage among them is merely collected after the run.
A process that froze objects itself (``gc.get_freeze_count() > 0``) is left alone.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]

_lock = threading.Lock()
_holders = 0


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the heap as it is for the duration of the block (nested and concurrent blocks share it)."""
    global _holders
    with _lock:
        owned = _holders > 0 or gc.get_freeze_count() == 0
        if owned:
            if _holders == 0:
                gc.freeze()
            _holders += 1
    try:
        yield
    finally:
        if owned:
            with _lock:
                _holders -= 1
                if _holders == 0:
                    gc.unfreeze()
