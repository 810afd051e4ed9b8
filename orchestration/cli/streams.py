"""Output streams a closed pipe cannot break: ``orchestrate run ... | head -3`` lets the run finish.

Python ignores SIGPIPE, so writing to a pipe whose reader went away raises ``BrokenPipeError``.
The CLI's stdout and stderr are wrapped once at start-up: on the first such error the stream's
file descriptor is pointed at ``/dev/null`` (as the Python documentation advises for SIGPIPE) and
every later write, the interpreter's last flush included, goes nowhere. The run goes on; its
results are stored and written.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

__all__ = ["PipeSafeStream", "protect_standard_streams"]


class PipeSafeStream:
    """A text stream that stops writing, silently, once its reader has gone away."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._discard()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._discard()

    def _discard(self) -> None:
        self.reader_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: as the wrapped stream
        return getattr(self._stream, name)


def protect_standard_streams() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once) in :class:`PipeSafeStream`."""
    import sys

    if not isinstance(sys.stdout, PipeSafeStream):
        sys.stdout = PipeSafeStream(sys.stdout)
    if not isinstance(sys.stderr, PipeSafeStream):
        sys.stderr = PipeSafeStream(sys.stderr)
