"""Where the engine's per-task time goes: pyinstrument over one zero-latency run (setup not profiled).

``python -m benchmarks.profile_engine [TASKS]`` prints the functions with the most self time.
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks.contenders.engine import build
from benchmarks.workloads import zero_latency

__all__ = ["profile"]


def profile(size: int = 10_000, top: int = 25) -> str:
    """Flat self-time listing of the run phase, the ``top`` heaviest functions."""
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    orchestrator = build(zero_latency(size))
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    with profiler:
        asyncio.run(orchestrator.run())
    session = profiler.last_session
    assert session is not None
    text = ConsoleRenderer(unicode=False, color=False, flat=True, show_all=True).render(session)
    lines = [line for line in text.splitlines() if line.strip()]
    header = [line for line in lines if not line[:1].isdigit() and not line.strip()[:1].isdigit()][:6]
    body = [line for line in lines if line.strip()[:1].isdigit()][:top]
    return "\n".join(header + body)


if __name__ == "__main__":
    print(profile(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
