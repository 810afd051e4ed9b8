"""The results as tables: on the terminal (rich when installed) and as ``RESULTS.md``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine", "print_tables", "tables", "write_markdown"]

Table = tuple[str, list[str], list[list[str]]]

_VERSIONS = ("anyio", "pydantic", "networkx", "langgraph", "orchestrate-llm")


def machine() -> dict[str, Any]:
    """Where and with what the benchmark ran."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for name in _VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _cell(summary: dict[str, Any], metric: str, digits: int) -> str:
    if summary["status"] != "ok":
        return str(summary["status"])
    ratio = summary.get("ratio_to_reference")
    text = f"{summary[metric]:,.{digits}f}"
    return f"{text} ({ratio:.2f}x)" if ratio is not None else text


def tables(document: dict[str, Any]) -> list[Table]:
    """(title, header, rows) of every table."""
    entries = document["workloads"]
    names = list(entries[0]["contenders"]) if entries else []
    result: list[Table] = []
    overhead = [e for e in entries if e["family"] == "overhead"]
    if overhead:
        rows = [
            [e["workload"], f"{e['tasks']:,}"] + [_cell(e["contenders"][n], "us_per_task", 1) for n in names]
            for e in overhead
        ]
        result.append(
            ("Per-task overhead, zero latency (µs per task; x reference)", ["workload", "tasks", *names], rows)
        )
        rows = []
        for e in overhead:
            cells = []
            for n in names:
                s = e["contenders"][n]
                cells.append(
                    f"{s['bytes_per_task']:,.0f} B, setup {s['setup_s']:.2f} s" if s["status"] == "ok" else s["status"]
                )
            rows.append([e["workload"], f"{e['tasks']:,}", *cells])
        result.append(
            ("Peak memory growth per task, and setup (build + validate) time", ["workload", "tasks", *names], rows)
        )
    for family, title in (("heavy_tailed", "Heavy-tailed latencies"), ("wfcommons", "WfCommons traces")):
        chosen = [e for e in entries if e["family"] == family]
        if chosen:
            rows = [
                [e["workload"], f"{e['tasks']:,}", str(e["cap"]), f"{e['lower_bound_s']:.2f}", _optimum(e)]
                + [_cell(e["contenders"][n], "makespan_over_lower_bound", 3) for n in names]
                for e in chosen
            ]
            header = ["workload", "tasks", "cap", "bound s", "optimum ≥", *names]
            result.append((f"{title}: makespan / lower bound (x reference)", header, rows))
    startup = document["startup"]
    help_s = startup["help_s"]
    rows = [
        ["import orchestration", f"{startup['import_orchestration_s'] * 1000:.0f} ms"],
        ["from orchestration import ProjectOrchestrator", f"{startup['import_orchestrator_s'] * 1000:.0f} ms"],
        ["orchestrate --help (whole process)", f"{help_s * 1000:.0f} ms" if help_s is not None else "n/a"],
        ["bare interpreter (python -c pass)", f"{startup['bare_interpreter_s'] * 1000:.0f} ms"],
    ]
    result.append(("Start-up (fresh interpreters, medians)", ["what", "time"], rows))
    return result


def _optimum(entry: dict[str, Any]) -> str:
    """What no schedule can beat, over the lower bound (``Workload.tight_lower_bound_s``); older results lack it."""
    tight = entry.get("tight_lower_bound_s")
    return f"{tight / entry['lower_bound_s']:.3f}" if tight else "-"


def print_tables(document: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        for title, header, rows in tables(document):
            print(f"\n{title}\n" + "\n".join(" | ".join(row) for row in [header, *rows]))
        return
    console = Console(width=max(Console().width, 132))
    for title, header, rows in tables(document):
        table = RichTable(title=title, title_justify="left")
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pacing_rows(reliability: dict[str, Any]) -> list[list[str]]:
    """Rows of the pacing table from ``benchmarks/reliability_bench.py``'s JSON."""
    rows = []
    for row in reliability.get("pacing", []):
        limits = [f"{row['requests_per_minute']:,.0f} requests/min"]
        if row.get("tokens_per_minute"):
            limits.append(f"{row['tokens_per_minute']:,.0f} tokens/min")
        if "achieved_share" in row:
            achieved, follow = f"{row['achieved_share']:.1%}", ""
        else:
            achieved = f"{row['achieved_share_before_change']:.1%} / {row['achieved_share_after_change']:.1%}"
            follow = f"{row['sent_above_new_limit_for_s']:.1f} s"
        rows.append(
            [
                row["scenario"],
                " + ".join(limits),
                achieved,
                f"{row['share_429']:.1%} ({row['responses_429']:,} of {row['requests']:,})",
                f"{row['failed_tasks']} of {row['tasks']:,}",
                follow,
            ]
        )
    return rows


def _pacing_section(reliability: Path) -> list[str]:
    if not reliability.exists():
        return []
    document = json.loads(reliability.read_text())
    rows = pacing_rows(document)
    if not rows:
        return []
    header = ["scenario", "provider's limit", "achieved", "answered 429", "failed tasks", "sent above a halved limit"]
    return [
        "",
        "## Pacing against rate limits the agent is not told",
        "",
        f"`python benchmarks/reliability_bench.py`{' --quick' if document.get('quick') else ''}: the fake provider "
        "(real SDKs, 127.0.0.1) enforces the limit with token buckets of one second; the agent sets only "
        "`max_concurrent: 32`, except the configured reference. Achieved: share of the binding limit after the "
        "first 2 s (before / after the change where the limit halves mid-run; a bucket refilled while the client "
        "waited lets it pass 100%); the last column: how long after "
        "the change the client still sent over 1.2x the new limit in a one-second window.",
        "",
        _markdown_table(header, rows),
    ]


def write_markdown(document: dict[str, Any], path: Path, notes: Path | None = None) -> None:
    """``RESULTS.md``: machine, versions, date, the tables, the pacing figures of ``results/reliability.json``,
    the engine profile and the notes on it."""
    info = document["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    parts = [
        "# Scheduling benchmark results",
        "",
        f"Measured {document['date']} with `python -m benchmarks.scheduling` ({document['mode']} run) on "
        f"{info['cpu']}, {info['cores']} cores, {info['platform']}, Python {info['python']}; {versions}.",
        "Each figure is the median of the repetitions; in brackets its ratio to the pure-asyncio reference of the "
        "same run. Contenders ran interleaved, each run in a fresh subprocess.",
    ]
    for title, header, rows in tables(document):
        parts += ["", f"## {title}", "", _markdown_table(header, rows)]
    parts += _pacing_section(path.parent / "results" / "reliability.json")
    notes = notes or path.parent / "overhead_notes.md"
    if notes.exists():
        parts += ["", notes.read_text().strip()]
    if profile := document.get("engine_profile"):
        parts += ["", "## Engine profile (zero latency, 10,000 tasks, run phase)", "", "```", profile, "```"]
    path.write_text("\n".join(parts) + "\n")
