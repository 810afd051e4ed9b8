"""Run the scheduling benchmark: ``python -m benchmarks.scheduling [--quick]``.

Contenders run interleaved (A B C D A B C D ...), each run in a fresh subprocess; every figure is a
median over the repetitions and is also given as a ratio to the pure-asyncio reference of the same run.
The full run writes ``benchmarks/results/<date>.json`` and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.contenders import CONTENDERS
from benchmarks.report import machine, print_tables, write_markdown
from benchmarks.startup import measure_startup
from benchmarks.suites import plan
from benchmarks.workloads import REPO_ROOT, Workload

__all__ = ["main", "measure"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LONG_RUN_S = 60.0
"""A contender whose run takes longer than this is measured once."""


def _run_child(contender: str, path: Path, timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.child", contender, str(path)]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"over {timeout_s:g} s"}
    if done.returncode != 0:
        return {"status": "error", "detail": done.stderr.strip().splitlines()[-1:] or ["exit status"]}
    run: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "unavailable" in run:
        return {"status": "n/a", "detail": run["unavailable"]}
    run["status"] = "invalid" if run["problems"] else "ok"
    return run


def _summarise(workload: Workload, runs: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        return {"status": bad[0]["status"], "detail": bad[0].get("problems") or bad[0].get("detail"), "runs": runs}
    run_s = statistics.median(r["run_s"] for r in runs)
    growth = statistics.median(r["peak_growth_bytes"] for r in runs)
    summary = {
        "status": "ok",
        "repetitions": len(runs),
        "run_s": run_s,
        "setup_s": statistics.median(r["setup_s"] for r in runs),
        "peak_growth_bytes": growth,
        "bytes_per_task": growth / workload.size,
        "runs_s": [r["run_s"] for r in runs],
    }
    if workload.family == "overhead":
        summary["us_per_task"] = run_s / workload.size * 1e6
    else:
        summary["makespan_over_lower_bound"] = run_s / workload.lower_bound_s()
    return summary


def _add_ratios(entry: dict[str, Any]) -> None:
    reference = entry["contenders"].get("reference", {})
    metric = "us_per_task" if entry["family"] == "overhead" else "makespan_over_lower_bound"
    for summary in entry["contenders"].values():
        if summary["status"] == "ok" and reference.get("status") == "ok":
            summary["ratio_to_reference"] = summary[metric] / reference[metric]


def measure(quick: bool, contenders: list[str], only: str | None = None) -> dict[str, Any]:
    """Run the plan and return the results document."""
    suite = plan(quick)
    entries = []
    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-") as tmp:
        for workload, repetitions in suite.workloads:
            if only and not re.search(only, workload.name):
                continue
            path = Path(tmp) / f"{workload.name}.json"
            workload.save(path)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
            for _ in range(repetitions):
                for name in contenders:
                    last = runs[name][-1] if runs[name] else None
                    if last and (last["status"] != "ok" or last["setup_s"] + last["run_s"] > LONG_RUN_S):
                        continue  # failures and very long runs are not repeated
                    runs[name].append(_run_child(name, path, suite.timeout_s))
            entry = {
                "workload": workload.name,
                "family": workload.family,
                "tasks": workload.size,
                "cap": workload.cap,
                "lower_bound_s": workload.lower_bound_s(),
                "tight_lower_bound_s": workload.tight_lower_bound_s() if workload.family != "overhead" else None,
                "contenders": {name: _summarise(workload, runs[name]) for name in contenders},
            }
            _add_ratios(entry)
            entries.append(entry)
            print(f"  measured {workload.name}", file=sys.stderr, flush=True)
    return {
        "mode": "quick" if quick else "full",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "startup": measure_startup(3 if quick else 7),
        "workloads": entries,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller suite, about a minute")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset, in run order")
    parser.add_argument(
        "--only",
        help="only workloads whose name matches this regular expression (re.search: a plain text matches "
        "names that contain it; 'zero-1000$' that one alone)",
    )
    parser.add_argument("--json", type=Path, help="where to write the results (default: benchmarks/results/)")
    parser.add_argument("--no-profile", action="store_true", help="full mode: skip the engine profile")
    parser.add_argument("--render", type=Path, help="print (and for a full run, write RESULTS.md from) saved results")
    args = parser.parse_args(argv)
    if args.render:
        document = json.loads(args.render.read_text())
        print_tables(document)
        if document["mode"] == "full":
            write_markdown(document, RESULTS_DIR.parent / "RESULTS.md")
        return
    contenders = [name for name in args.contenders.split(",") if name]
    unknown = set(contenders) - CONTENDERS.keys()
    if unknown or "reference" not in contenders:
        parser.error(f"contenders must include 'reference' and be among {', '.join(CONTENDERS)}")
    document = measure(args.quick, contenders, args.only)
    full = not args.quick and not args.only
    if full and not args.no_profile:
        from benchmarks.profile_engine import profile

        document["engine_profile"] = profile()
    print_tables(document)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    target = args.json or RESULTS_DIR / f"{document['mode']}-{stamp}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"results: {target}")
    if full:
        write_markdown(document, RESULTS_DIR.parent / "RESULTS.md")
        print(f"table: {RESULTS_DIR.parent / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
