"""Where the engine's per-task time goes: pyinstrument over one zero-latency run (setup not profiled).

``python -m benchmarks.profile_engine [TASKS]`` prints the call tree, as shares of the run's time.
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks.contenders.engine import build
from benchmarks.workloads import zero_latency

__all__ = ["profile"]


def profile(size: int = 10_000) -> str:
    """The run phase's call tree (frames under 1% hidden), as percentages of the total."""
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    orchestrator = build(zero_latency(size))
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    with profiler:
        asyncio.run(orchestrator.run())
    session = profiler.last_session
    assert session is not None
    renderer = ConsoleRenderer(
        unicode=False,
        color=False,
        time="percent_of_total",
        processor_options={"filter_threshold": 0.01},
    )
    lines = renderer.render(session).splitlines()
    start = next(i for i, line in enumerate(lines) if "%" in line)  # drop the banner
    return "\n".join(line.rstrip() for line in lines[start:] if line.strip())


if __name__ == "__main__":
    print(profile(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
