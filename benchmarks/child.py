"""One measured run in a fresh interpreter: ``python -m benchmarks.child CONTENDER WORKLOAD.json``.

Prints one JSON object: setup and run wall times, makespan, peak memory growth, and whether the
execution log is valid.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import sys
from pathlib import Path

from benchmarks.checks import check_log
from benchmarks.contenders import CONTENDERS, Unavailable
from benchmarks.workloads import Workload

__all__ = ["main"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str]) -> dict[str, object]:
    name, path = argv
    module = importlib.import_module(CONTENDERS[name])
    workload = Workload.load(Path(path))
    gc.collect()
    baseline = _rss_bytes()
    try:
        trace = module.execute(workload)
    except Unavailable as exc:
        return {"contender": name, "workload": workload.name, "unavailable": str(exc)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    problems = check_log(workload.parents, trace.starts, trace.ends, workload.cap)
    return {
        "contender": name,
        "workload": workload.name,
        "tasks": workload.size,
        "setup_s": trace.setup_s,
        "run_s": trace.run_s,
        "peak_growth_bytes": max(0, peak - baseline),
        "problems": problems,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
