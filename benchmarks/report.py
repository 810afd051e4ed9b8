"""The results as tables: on the terminal (rich when installed) and as ``RESULTS.md``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["cache_tables", "machine", "print_tables", "serve_tables", "show", "tables", "write_markdown"]

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
    show(tables(document))


def show(found: list[Table]) -> None:
    """Print tables on the terminal (rich when installed)."""
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        for title, header, rows in found:
            print(f"\n{title}\n" + "\n".join(" | ".join(row) for row in [header, *rows]))
        return
    console = Console(width=max(Console().width, 132))
    for title, header, rows in found:
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


def serve_tables(document: dict[str, Any]) -> list[Table]:
    """(title, header, rows) of ``benchmarks/serve_bench.py``'s JSON: the watched runs, then request latency."""
    sizes = document["sizes"]
    runs = []
    for count, s in document["by_watchers"].items():
        per_task = f"{s['per_task_us']:,.1f}"
        if s.get("repeats", 1) > 1 and "per_task_us_min" in s:
            per_task += f" ({s['per_task_us_min']:,.0f}-{s['per_task_us_max']:,.0f})"
        waiting = s.get("server_busy_share_while_waiting")
        idle = "-" if waiting is None else f"{waiting:.1%}" if waiting < 0.1 else f"{waiting:.0%}"
        if count == "0":
            runs.append([count, per_task, idle, *["-"] * 7])
            continue
        runs.append(
            [
                count,
                per_task,
                idle,
                f"{s['delivered_per_s']:,.0f} ({s['needed_per_s']:,.0f})",
                f"{s['lag_median_ms']:,.0f} / {s['lag_p99_ms']:,.0f}",
                f"{s['lag_median_first_tenth_ms']:,.0f} / {s['lag_median_last_tenth_ms']:,.0f}",
                f"{s['last_delivery_after_run_s']:,.1f}",
                f"{s['complete_watchers']:.0f} of {count}",
                f"{s.get('server_cpu_us_per_delivery', float('nan')):,.0f}",
                f"{s['client_cpu_s']:,.1f} / {s['watch_wall_s']:,.1f}",
            ]
        )
    watched = (
        f"SSE watchers of a {sizes['tasks']:,}-task zero-latency run ({document['by_watchers']['0']['events']:,.0f} "
        "events; medians of the repetitions, the per-task range in brackets)",
        [
            "watchers",
            "run: µs per task",
            "server CPU, nothing new",
            "delivered events/s (needed)",
            "lag median / p99 (ms)",
            "median lag, first / last tenth (ms)",
            "last delivery after the run (s)",
            "every event once, in order",
            "server CPU per delivery (µs)",
            "client CPU / wall (s)",
        ],
        runs,
    )
    latency = []
    for figures in document["latency"].values():
        errors = ", ".join(f"{count:,} {kind}" for kind, count in figures["errors"].items()) or "0"
        fresh = figures.get("alone_new_connection_median_ms")
        latency.append(
            [
                f"GET {figures['route']}",
                f"{figures['response_bytes']:,} B",
                f"{fresh:,.1f}" if fresh is not None else "-",
                f"{figures['alone_median_ms']:,.1f}",
                f"{figures['median_ms']:,.1f} / {figures['p99_ms']:,.1f}" if figures["answered"] else "-",
                f"{figures['answered']:,} of {figures['requests']:,}",
                errors,
                f"{figures['client_started_late_p99_ms']:,.0f}",
            ]
        )
    loaded = f"{sizes['rate']:g}/s"
    requests = (
        f"Request latency: one at a time, then open-loop at {loaded} for {sizes['seconds']:g} s (ms)",
        [
            "request",
            "answer",
            "alone, new connection",
            "alone, kept alive",
            f"at {loaded}: median / p99 of answered",
            "answered",
            "errors",
            "started late, p99",
        ],
        latency,
    )
    return [watched, requests]


def cache_tables(document: dict[str, Any]) -> list[Table]:
    """(title, header, rows) of ``benchmarks/cache_bench.py``'s JSON: the cost of a lookup, then the savings."""
    lookup, saved = document["lookup"], document["savings"]
    us = lookup["us_per_task"]
    costs = (
        f"Answer cache lookup per task: {lookup['tasks']:,} tasks (prompts of ~{lookup['prompt_chars']:,} "
        f"characters), {lookup['entries']:,} answers kept, median of {lookup['repeats']} (µs)",
        ["request key only", "key + lookup, hit", "key + lookup, miss"],
        [[f"{us['key']:.1f}", f"{us['hit']:.1f}", f"{us['miss']:.1f}"]],
    )
    runs = [
        [
            str(number),
            str(run["requests"]),
            f"{run['cost_usd']:.6f}",
            f"{run['saved_usd']:.6f}",
            f"{run['hits']} of {run['tasks']}",
            f"{run['wall_s']:.2f}",
        ]
        for number, run in enumerate(saved["runs"], 1)
    ]
    savings = (
        f"examples/research_pipeline.yaml twice on one store (answers of ~{saved['answer_words']} tokens)",
        ["run", "requests", "cost of the results (USD)", "saved by the cache (USD)", "cache hits", "wall (s)"],
        runs,
    )
    return [costs, savings]


def _cache_section(results: Path) -> list[str]:
    if not results.exists():
        return []
    document = json.loads(results.read_text())
    info = document["machine"]
    load = ", ".join(f"{value:.2f}" for value in document.get("load_average", []))
    parts = [
        "",
        "## Spend control: the answer cache",
        "",
        f"`python benchmarks/cache_bench.py`, {document['when']}, on {info['cpu']}, {info['cores']} cores, Python "
        f"{document['python']} (load average {load} before it, from other work). "
        "The lookup: what the executor adds to a task with the cache on, before any call: the request's key "
        "(sha256 of the canonical JSON of the request, the messages' texts hashed as they are) and its lookup"
        " in the store's `answers` table. The savings: the example run twice on one store against the fake "
        "provider server (real SDKs, 127.0.0.1); its cost at the usage the server reported, priced with "
        "genai-prices; the second run makes no request (the first run's wall time is mostly the three SDKs' "
        "imports and clients).",
    ]
    for title, header, rows in cache_tables(document):
        parts += ["", f"### {title}", "", _markdown_table(header, rows)]
    return parts


def _serve_section(results: Path) -> list[str]:
    if not results.exists():
        return []
    document = json.loads(results.read_text())
    info = document["machine"]
    sizes = document["sizes"]
    load = ", ".join(f"{value:.2f}" for value in info.get("load_average_before", []))
    at_start = [run["load_average_at_start"][0] for run in document["runs"] if run.get("load_average_at_start")]
    during = f" and {min(at_start):.1f}-{max(at_start):.1f} as each run started" if at_start else ""
    n = sizes["watchers"]
    many = document["by_watchers"].get(str(n), {})
    parts = [
        "",
        "## `orchestrate serve` under load",
        "",
        f"`python benchmarks/serve_bench.py{' --quick' if document.get('quick') else ''}`, {document['date']}, on "
        f"{info['cpu']}, {info['cores']} cores, Python {info['python']}. A shared machine: load average {load} "
        f"(1, 5, 15 min) before the benchmark{during} (1 min), from other work. `orchestrate serve` (token, "
        "fresh store, `--log-level warning`), `orchestrate run FILE --store` on the same store and the clients (one "
        "asyncio process, httpx) are three processes on 127.0.0.1 sharing those cores.",
        "",
        f"The run: a first task held by a review gate, then {sizes['tasks'] - 1:,} zero-latency tasks (the layered "
        "DAG of the scheduling benchmark, 64 at once) after it. The watchers open `GET /api/runs/{id}/events`; once "
        f"each has received an event, the server's CPU is read for {sizes.get('idle_s', 5):g} s while the run waits "
        "at its gate (**server CPU, nothing new**, in shares of one core, above 100% where the store reads of worker "
        "threads overlap: what watchers of a running run cost when it writes nothing, as between a slow model's "
        "answers), then the benchmark approves the gate through the API. "
        "**run: µs per task** is the "
        "run's own time from the gate's success to its last task event, per task (the store's event timestamps), "
        f"with no watcher (the server idle), one, and {n}; runs interleaved, {sizes['repeats']} of each. An "
        "event's **lag** is when its last byte reached the watcher minus its `timestamp` (taken when the run "
        "process emitted it, just before the group commit that makes it visible: the lag is that commit, the "
        "server's read of the run (one for all its watchers: again at once after a read that found events, 0.25 s "
        "after one that found none), the send and the read), over the "
        "events after the gate; **delivered events/s**: those deliveries, all watchers together, over the time "
        "from the first of them to the last delivery; **needed**: what keeping up with the run would have taken. "
        "Every watcher's ids are checked against the store. The client reads only the `id:` lines of what "
        "arrives (the timestamps come from the store by id), so that its parsing does not set the pace.",
    ]
    if "server_busy_share" in many:
        if many["delivered_per_s"] < many["needed_per_s"] * 0.9:
            behind = (
                f"The server could not keep up: it delivered {many['delivered_per_s']:,.0f} events/s to the {n} "
                f"watchers together ({many['delivered_per_s'] / n:,.0f} per watcher), "
                f"{many['delivered_per_s'] / many['needed_per_s']:.1%} of what the run's pace needed, so the lag grew "
                f"through the run (median {many['lag_median_first_tenth_ms'] / 1000:,.1f} s over its first tenth, "
                f"{many['lag_median_last_tenth_ms'] / 1000:,.1f} s over its last) and the watchers received its last "
                f"event {many['last_delivery_after_run_s']:,.0f} s after it ended. "
            )
            if many["server_busy_share"] < 0.5:
                behind += (
                    f"The server was not what held it back (it was busy {many['server_busy_share']:.0%} of the "
                    "time): the client reading the streams and the run shared the cores with the other work of "
                    "the machine. "
                )
        else:
            behind = (
                f"The server kept up: it delivered {many['delivered_per_s']:,.0f} events/s to the {n} watchers "
                f"together, {many['delivered_per_s'] / many['needed_per_s']:.0%} of what the run's pace needed (median "
                f"lag {many['lag_median_first_tenth_ms']:,.0f} ms over the run's first tenth, "
                f"{many['lag_median_last_tenth_ms']:,.0f} ms over its last; the last event arrived "
                f"{many['last_delivery_after_run_s']:,.1f} s after the run ended). "
            )
        parts += [
            "",
            f"{behind}With {n} watchers the server process used {many['server_busy_share']:.0%} of a core from the "
            f"gate's approval to the last delivery ({many['server_cpu_s']:,.0f} s of CPU for "
            f"{many['delivered_events']:,.0f} events), the client {many['client_cpu_s']:,.0f} s; the server's peak "
            f"memory was {many.get('server_peak_rss_mb', float('nan')):,.0f} MiB.",
        ]
    parts += [
        "",
        "Request latency: the finished run's `GET /api/runs/{id}` (and `/api/health`, the HTTP stack's floor), "
        "first one request at a time (on new connections, and on one kept alive), then open-loop: each request sent "
        "at its scheduled time on a new connection whatever the others do, its latency counted from that time to "
        f"the answer's last byte; no answer within {sizes['timeout_s']:g} s of its time is an error (the server "
        "still works on it). **started late**: how far behind schedule the client itself started a request. The "
        "run view carries an ETag, but this client sends no `If-None-Match`: every answer is the whole view (built "
        "once, then kept while the run is unchanged).",
    ]
    late = max((figures["client_started_late_p99_ms"] for figures in document["latency"].values()), default=0.0)
    if late > sizes["timeout_s"] * 1000 / 2:
        parts[-1] += (
            f" The client fell behind its own schedule (requests started up to {late / 1000:,.1f} s late, p99): "
            "reading the answers at that rate was more than this one client process could do here, so the loaded "
            "figures measure the client as much as the server."
        )
    for title, header, rows in serve_tables(document):
        parts += ["", f"### {title}", "", _markdown_table(header, rows)]
    before = results.parent.parent / "serve_before.md"
    if before.exists():  # the figures of an earlier version, kept for comparison
        parts += ["", before.read_text().strip()]
    return parts


def write_markdown(document: dict[str, Any], path: Path, notes: Path | None = None) -> None:
    """``RESULTS.md``: machine, versions, date, the tables, the pacing figures of ``results/reliability.json``,
    the serve figures of ``results/serve.json`` (and ``serve_before.md``), the engine profile and the notes on it."""
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
    parts += _serve_section(path.parent / "results" / "serve.json")
    parts += _cache_section(path.parent / "results" / "cache.json")
    notes = notes or path.parent / "overhead_notes.md"
    if notes.exists():
        parts += ["", notes.read_text().strip()]
    if profile := document.get("engine_profile"):
        parts += ["", "## Engine profile (zero latency, 10,000 tasks, run phase)", "", "```", profile, "```"]
    path.write_text("\n".join(parts) + "\n")
