"""Text-level stop sequences for runtimes that match stops on token ids only."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopScanner"]


class StopScanner:
    """Holds back streamed text that may be the start of a stop sequence.

    :meth:`feed` returns the text that is safe to emit and whether a stop sequence
    was found (the stop sequence and anything after it are dropped).
    """

    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [s for s in stops or () if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buffer = self._pending + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self._pending = ""
            return buffer[: min(found)], True
        held = max((self._overlap(buffer, s) for s in self.stops), default=0)
        self._pending = buffer[len(buffer) - held :] if held else ""
        return buffer[: len(buffer) - held], False

    def flush(self) -> str:
        """The text held back, at the end of the stream."""
        text, self._pending = self._pending, ""
        return text

    @staticmethod
    def _overlap(text: str, stop: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
        for size in range(min(len(text), len(stop) - 1), 0, -1):
            if text.endswith(stop[:size]):
                return size
        return 0
