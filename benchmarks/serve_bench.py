"""``orchestrate serve`` under load: SSE watchers of a large offline run, and the run view at a fixed request rate.

Everything runs as the user runs it, in separate processes on 127.0.0.1: ``orchestrate serve`` (a token, a fresh
run store, ``--log-level warning``: no access log) and ``orchestrate run FILE --store`` on the same store; this
process is the clients (one asyncio loop, httpx).

1. Watchers. The project: a first task ``gate`` under review (``review: require_human``), then the other tasks,
   zero latency, in the layered DAG of the scheduling benchmark (``benchmarks.workloads.layered_dag``) whose first
   layer depends on ``gate``; 64 at once. Once the run is in the store, N watchers open
   ``GET /api/runs/{id}/events``; once each has received an event, the server's CPU is measured for ``idle_s``
   (the run waits at its gate: what watchers of a run with nothing new cost), then this process approves ``gate``
   through the API (the run process sees the decision within a second), and the watchers read their streams to
   the end. Each
   watcher records when each event's last byte arrived; an event's **lag** is that time minus the event's
   ``timestamp`` (epoch seconds, taken when the run process emitted it, just before the group commit that makes it
   visible, so the lag covers the commit, the server's poll interval and query, the send and the client's read;
   same machine, same clock). Lag and throughput are taken over the events after ``gate`` succeeded,
   **delivered events/s** is those deliveries over the time from the first of those events to the last delivery,
   and **needed** is what keeping up would take (watchers x events / the run's time for them). Each watcher's ids
   are checked against the store: every event of the run, once, in order. The client parses only the ``id:``
   lines (a regular expression over what arrived), not each event's JSON: with httpx-sse's parser the client
   would cost several times more; timestamps come from the store by id after the run.
2. The run's own cost per task: (last task event - ``gate``'s success) / (tasks - 1), from the store's event
   timestamps, with no watcher (the server idle), with one (the lag's reference) and with N, interleaved.
3. ``GET /api/runs/{id}`` of the finished run: first one request at a time (its service time, the reference), on
   new connections and on one kept alive, then open-loop at ``--rate`` requests/s for ``--seconds``: each request
   is sent at its scheduled time on a new connection (raw HTTP/1.1, ``Connection: close``) whatever the others do,
   and its latency counts from that time to the answer's last byte (no coordinated omission); a request not
   answered within ``--timeout-s`` of its time is an error. ``GET /api/health`` the same way is the HTTP stack's
   floor. This phase comes last: the server goes on working on requests the client gave up on.

Run ``python benchmarks/serve_bench.py --quick`` (2,000 tasks, 20 watchers, about 2 minutes) or without it (10,000
tasks, 100 watchers, 200 requests/s). Writes ``benchmarks/results/serve.json`` (``report.py`` makes the section of
``RESULTS.md`` from it) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import anyio  # noqa: E402
import httpx  # noqa: E402

from benchmarks.report import machine, serve_tables, show  # noqa: E402
from benchmarks.workloads import layered_dag  # noqa: E402

__all__ = ["Sizes", "main", "percentile", "project", "read_ids"]

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
TOKEN = "serve-bench-token-0123456789"
CAP = 64
"""Tasks running at once (the scheduling benchmark's zero-latency cap)."""
START_TIMEOUT_S = 120.0
"""How long the server or the run may take to start (a 10,000-task file is read and validated first)."""
ALONE_TIMEOUT_S = 300.0
"""How long a request sent alone may take (the run view of 10,000 tasks takes seconds)."""


@dataclass(frozen=True)
class Sizes:
    tasks: int
    watchers: int
    rate: float
    """Requests per second of the latency phase."""
    seconds: float
    """How long the latency phase sends."""
    repeats: int
    """Runs with each number of watchers (interleaved)."""
    idle_s: float = 5.0
    """How long the run waits at its gate with every watcher connected (the server's cost of idle watchers)."""
    timeout_s: float = 10.0
    """A request of the latency phase not answered by then is an error."""
    drain_timeout_s: float = 900.0
    """Watchers still reading this long after the run ended are stopped (reported incomplete)."""


QUICK = Sizes(tasks=2000, watchers=20, rate=200.0, seconds=5.0, repeats=1)
FULL = Sizes(tasks=10_000, watchers=100, rate=200.0, seconds=10.0, repeats=2)


def project(tasks: int, seed: int = 1) -> dict[str, Any]:
    """The task file: ``gate``, held for a review decision, then ``tasks - 1`` zero-latency tasks in a layered DAG
    whose sources depend on ``gate``."""
    parents = layered_dag(tasks - 1, seed)
    rows: list[dict[str, Any]] = [{"id": "gate", "description": "gate", "review": "require_human"}]
    for node, before in enumerate(parents):
        rows.append({"id": f"t{node}", "description": f"t{node}", "depends_on": [f"t{p}" for p in before] or ["gate"]})
    return {
        "name": "serve-bench",
        "agents": {"sim": {"type": "offline"}},
        "defaults": {"agent": "sim", "max_concurrency": CAP},
        "tasks": rows,
    }


_ID = re.compile(rb"^id: ?(\d+)\r?$", re.MULTILINE)
_END = (b"\r\n\r\n", b"\n\n", b"\r\r")


def read_ids(buffer: bytes) -> tuple[list[int], bytes]:
    """The ids of the complete SSE events at the start of ``buffer`` (those ended by a blank line), and the rest."""
    end = max(buffer.rfind(mark) + len(mark) if mark in buffer else -1 for mark in _END)
    if end < 0:
        return [], buffer
    return [int(found) for found in _ID.findall(buffer, 0, end)], buffer[end:]


def percentile(ordered: Sequence[float], share: float) -> float:
    """The ``share`` quantile of sorted values (nearest rank)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used so far; ``None`` where ``/proc`` is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (MiB); ``None`` where ``/proc`` is not there."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) / 1024 if found else None


# -- processes --------------------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str

    def client(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, **options)


@contextmanager
def serving(store: Path, log: Path) -> Iterator[Server]:
    """``orchestrate serve`` on a free loopback port, answering ``/api/health``, until the block ends."""
    command = [sys.executable, "-m", "orchestration", "serve", "--port", "0", "--store", str(store)]
    command += ["--token", TOKEN, "--log-level", "warning"]
    with open(log, "w") as errors:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "orchestrate serve: http://127.0.0.1:PORT/ (the token of --token)"
        found = re.search(r"(http://\S+?)/", line)
        if found is None:
            raise RuntimeError(f"orchestrate serve did not start: {line!r} {log.read_text()[-2000:]}")
        server = Server(process, found[1])
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{server.url}/api/health", timeout=5.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"orchestrate serve did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start_run(file: Path, store: Path, run_id: str, log: Path) -> subprocess.Popen[bytes]:
    """``orchestrate run FILE`` with the defaults (progress display, event log), its output to a file as in CI."""
    command = [sys.executable, "-m", "orchestration", "run", str(file), "--store", str(store), "--run-id", run_id]
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)


async def _recorded(client: httpx.AsyncClient, run_id: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the run is in the store (one cheap request every 50 ms)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        response = await client.get("/api/runs", params={"limit": 5})
        if any(run["run_id"] == run_id for run in response.json()["runs"]):
            return
        await anyio.sleep(0.05)
    raise RuntimeError(f"run {run_id} did not start (exit status {process.poll()})")


async def _approve(client: httpx.AsyncClient, run_id: str, process: subprocess.Popen[bytes]) -> None:
    """Approve ``gate`` as soon as its gate is open (404 until then)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    body = {"decision": "approve", "actor": "serve-bench"}
    while time.monotonic() < deadline and process.poll() is None:
        response = await client.post(f"/api/runs/{run_id}/tasks/gate/review", json=body)
        if response.status_code == 200:
            return
        if response.status_code != 404:
            raise RuntimeError(f"approving gate: {response.status_code} {response.text}")
        await anyio.sleep(0.05)
    raise RuntimeError(f"gate of run {run_id} was never open (exit status {process.poll()})")


# -- watchers ---------------------------------------------------------------------------------------------------


@dataclass
class Watcher:
    opened: float = float("nan")
    """When the stream's headers arrived (epoch seconds)."""
    ids: array[int] = field(default_factory=lambda: array("q"))
    at: array[float] = field(default_factory=lambda: array("d"))
    """When each event's last byte arrived (epoch seconds)."""
    finished: bool = False
    error: str | None = None


async def _watch(client: httpx.AsyncClient, run_id: str, watcher: Watcher, streaming: Callable[[], None]) -> None:
    """Read the run's stream to its end; call ``streaming`` once its first event arrived (or it failed)."""
    try:
        async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            response.raise_for_status()
            watcher.opened = time.time()
            buffer = b""
            async for chunk in response.aiter_raw():
                now = time.time()
                ids, buffer = read_ids(buffer + chunk)
                if ids and not watcher.ids:
                    streaming()
                watcher.ids.extend(ids)
                watcher.at.extend([now] * len(ids))
        watcher.finished = True
    except (httpx.HTTPError, OSError) as exc:
        watcher.error = f"{type(exc).__name__}: {exc}"
        if not watcher.ids:
            streaming()


@dataclass(frozen=True)
class StoredEvents:
    ids: list[int]
    """The run's events in order."""
    timestamp: dict[int, float]
    gate_done: int
    """The id of ``gate``'s success."""
    fanout_s: float
    """From ``gate``'s success to the last task event."""


def _stored(store: Path, run_id: str) -> StoredEvents:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT seq, kind, task_id, timestamp FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    gate = next(seq for seq, kind, task, _ in rows if task == "gate" and kind == "task_succeeded")
    stamps = {seq: stamp for seq, _, _, stamp in rows}
    last_task = max(stamp for _, kind, task, stamp in rows if task is not None and kind.startswith("task_"))
    return StoredEvents([seq for seq, *_ in rows], stamps, gate, last_task - stamps[gate])


def watched_run(server: Server, store: Path, file: Path, tasks: int, watchers: int, sizes: Sizes) -> dict[str, Any]:
    """One run of the project with ``watchers`` SSE watchers: the run's cost per task, and what they received."""
    run_id = f"w{watchers}-{time.time_ns()}"
    log = store.parent / f"{run_id}.log"
    crowd = [Watcher() for _ in range(watchers)]
    cpu: dict[str, float] = {}

    async def go() -> float:
        limits = httpx.Limits(max_connections=watchers + 8, max_keepalive_connections=watchers + 8)
        async with server.client(limits=limits, timeout=httpx.Timeout(60.0, read=None)) as client:
            started = time.perf_counter()
            process = _start_run(file, store, run_id, log)
            await _recorded(client, run_id, process)
            draining = anyio.CancelScope()  # its deadline is set once the run ended
            all_streaming = anyio.Event()
            waiting = [watchers]

            def streaming() -> None:
                waiting[0] -= 1
                if not waiting[0]:
                    all_streaming.set()

            async def watch_all() -> None:
                with draining:
                    async with anyio.create_task_group() as watching:
                        for watcher in crowd:
                            watching.start_soon(_watch, client, run_id, watcher, streaming)

            async with anyio.create_task_group() as group:
                group.start_soon(watch_all)
                if watchers:
                    with anyio.fail_after(START_TIMEOUT_S):
                        await all_streaming.wait()
                idle = _cpu_s(server.process.pid)  # the run waits for its gate: the watchers have nothing new
                await anyio.sleep(sizes.idle_s)
                server_cpu, client_cpu, wall = _cpu_s(server.process.pid), time.process_time(), time.perf_counter()
                if idle is not None and server_cpu is not None:
                    cpu["idle_share"] = (server_cpu - idle) / sizes.idle_s
                await _approve(client, run_id, process)
                status = await anyio.to_thread.run_sync(process.wait)
                elapsed = time.perf_counter() - started
                if status != 0:
                    draining.cancel()
                    raise RuntimeError(f"orchestrate run exited {status}: {log.read_text()[-2000:]}")
                draining.deadline = anyio.current_time() + sizes.drain_timeout_s
            after = _cpu_s(server.process.pid)
            cpu["client_s"] = time.process_time() - client_cpu
            cpu["wall_s"] = time.perf_counter() - wall
            if server_cpu is not None and after is not None:
                cpu["server_s"] = after - server_cpu
            return elapsed

    process_s = anyio.run(go)
    stored = _stored(store, run_id)
    row: dict[str, Any] = {
        "run_id": run_id,
        "tasks": tasks,
        "watchers": watchers,
        "events": len(stored.ids),
        "process_s": round(process_s, 2),
        "fanout_s": round(stored.fanout_s, 3),
        "per_task_us": round(stored.fanout_s / (tasks - 1) * 1e6, 1),
        "server_peak_rss_mb": _peak_rss_mb(server.process.pid),
    }
    if "idle_share" in cpu:
        row["server_busy_share_while_waiting"] = round(cpu["idle_share"], 3)
    if watchers:
        row |= _deliveries(crowd, stored, cpu)
    return row


def _deliveries(crowd: list[Watcher], stored: StoredEvents, cpu: dict[str, float]) -> dict[str, Any]:
    live = [seq for seq in stored.ids if seq > stored.gate_done]
    start = stored.timestamp[live[0]]
    lags: list[float] = []
    early: list[float] = []  # the first tenth of the live events, and the last
    late: list[float] = []
    last_early, first_late = live[len(live) // 10], live[len(live) * 9 // 10]
    last_delivery = start
    for watcher in crowd:
        for seq, at in zip(watcher.ids, watcher.at, strict=True):
            if seq > stored.gate_done:
                lag = at - stored.timestamp[seq]
                lags.append(lag)
                if seq < last_early:
                    early.append(lag)
                elif seq >= first_late:
                    late.append(lag)
        if watcher.at:
            last_delivery = max(last_delivery, watcher.at[-1])
    complete = sum(1 for w in crowd if w.finished and list(w.ids) == stored.ids)
    lags.sort()
    early.sort()
    late.sort()
    window = last_delivery - start
    delivered = len(lags)
    row: dict[str, Any] = {
        "complete_watchers": complete,
        "watchers_with_errors": sum(1 for w in crowd if w.error),
        "errors": sorted({w.error for w in crowd if w.error})[:5],
        "delivered_events": sum(len(w.ids) for w in crowd),
        "live_events_delivered": delivered,
        "delivered_per_s": round(delivered / window) if window > 0 else None,
        "needed_per_s": round(len(crowd) * len(live) / stored.fanout_s) if stored.fanout_s > 0 else None,
        "lag_median_ms": round(percentile(lags, 0.5) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(lags[-1] * 1000, 1) if lags else None,
        "lag_median_first_tenth_ms": round(percentile(early, 0.5) * 1000, 1),
        "lag_median_last_tenth_ms": round(percentile(late, 0.5) * 1000, 1),
        "last_delivery_after_run_s": round(last_delivery - stored.timestamp[stored.ids[-1]], 2),
        "client_cpu_s": round(cpu["client_s"], 1),
        "watch_wall_s": round(cpu["wall_s"], 1),
    }
    if "server_s" in cpu:
        row["server_cpu_s"] = round(cpu["server_s"], 1)
        row["server_busy_share"] = round(cpu["server_s"] / cpu["wall_s"], 2)
        row["server_cpu_us_per_delivery"] = round(cpu["server_s"] / max(1, row["delivered_events"]) * 1e6, 1)
    return row


# -- request latency --------------------------------------------------------------------------------------------


async def _one_at_a_time(client: httpx.AsyncClient, path: str, count: int, *, reuse: bool) -> tuple[list[float], int]:
    """Latencies of ``count`` requests sent one after the other (sorted), and the size of an answer; ``reuse``:
    on one kept-alive connection, else a new connection each (``Connection: close``)."""
    times = []
    size = 0
    headers = {} if reuse else {"Connection": "close"}
    for _ in range(count):
        sent = time.perf_counter()
        response = await client.get(path, headers=headers)
        response.raise_for_status()
        times.append(time.perf_counter() - sent)
        size = len(response.content)
    return sorted(times), size


async def _get(host: str, port: int, path: str) -> int:
    """One ``GET`` on a new connection (``Connection: close``), taking gzip as browsers and httpx do, read to its
    end: its status. Raw HTTP/1.1, so that
    a thousand requests at once cost the client little (httpx's pool grows slow with that many)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(request.encode())
        head = b""
        try:
            while True:
                chunk = await stream.receive()
                if len(head) < 16:
                    head += chunk[:16]
        except anyio.EndOfStream:
            pass
    status = head.split(b" ", 2)
    return int(status[1]) if len(status) > 1 and status[1].isdigit() else 0


async def _open_loop(server: Server, path: str, sizes: Sizes) -> dict[str, Any]:
    """``sizes.rate`` requests per second for ``sizes.seconds``, each sent at its time on a new connection whatever
    the others do; latency from that time to the answer's end."""
    url = httpx.URL(server.url)
    host, port = url.host, url.port or 80
    count = round(sizes.rate * sizes.seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    late: list[float] = []

    def failed(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one(scheduled: float) -> None:
        late.append(time.perf_counter() - scheduled)
        try:
            with anyio.fail_after(sizes.timeout_s - (time.perf_counter() - scheduled)):
                status = await _get(host, port, path)
        except TimeoutError:
            failed("timeout")
        except OSError as exc:
            failed(type(exc).__name__)
        else:
            if status == 200:
                latencies.append(time.perf_counter() - scheduled)
            else:
                failed(str(status))

    start = time.perf_counter() + 0.1
    async with anyio.create_task_group() as group:
        for index in range(count):
            scheduled = start + index / sizes.rate
            await anyio.sleep(max(0.0, scheduled - time.perf_counter()))
            group.start_soon(one, scheduled)
    latencies.sort()
    late.sort()
    return {
        "requests": count,
        "answered": len(latencies),
        "errors": errors,
        "median_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "client_started_late_p99_ms": round(percentile(late, 0.99) * 1000, 1),
    }


def request_latency(server: Server, run_id: str, sizes: Sizes) -> dict[str, Any]:
    """One at a time (the service time), then open-loop: the run view, and ``/api/health`` as the floor."""

    async def go() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, route in (("health", "/api/health"), ("run", "/api/runs/{id}")):
            path = route.replace("{id}", run_id)
            async with server.client(timeout=ALONE_TIMEOUT_S) as client:
                count = 3 if name == "run" else 50
                fresh, size = await _one_at_a_time(client, path, count, reuse=False)
                alone, _ = await _one_at_a_time(client, path, count, reuse=True)
            loaded = await _open_loop(server, path, sizes)
            found[name] = {
                "route": route,
                "path": path,
                "alone_new_connection_median_ms": round(percentile(fresh, 0.5) * 1000, 1),
                "alone_median_ms": round(percentile(alone, 0.5) * 1000, 1),
                "alone_max_ms": round(alone[-1] * 1000, 1),
                "response_bytes": size,
                **loaded,
            }
        return found

    return anyio.run(go)


# -- the benchmark ----------------------------------------------------------------------------------------------


def _load() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def measure(sizes: Sizes, *, quick: bool, target: Path) -> dict[str, Any]:
    """Every figure; what is measured so far is written to ``target`` before the latency phase, which leaves the
    server busy (the server is stopped after it)."""
    document: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "sizes": asdict(sizes),
        "machine": machine() | {"load_average_before": _load()},
        "runs": [],
    }
    runs: list[dict[str, Any]] = document["runs"]
    with tempfile.TemporaryDirectory(prefix="orchestrate-serve-bench-") as tmp:
        folder = Path(tmp)
        store = folder / "store" / "runs.db"
        store.parent.mkdir()
        file = folder / "project.json"
        file.write_text(json.dumps(project(sizes.tasks)))
        with serving(store, folder / "serve.log") as server:
            for repeat in range(sizes.repeats):  # interleaved, so that the machine's load hits each alike
                for watchers in (0, 1, sizes.watchers):
                    print(f"run {repeat + 1}/{sizes.repeats}: {sizes.tasks:,} tasks, {watchers} watchers", flush=True)
                    load = _load()
                    runs.append(watched_run(server, store, file, sizes.tasks, watchers, sizes))
                    runs[-1]["load_average_at_start"] = load
            document["by_watchers"] = _by_watchers(runs)
            _write(document, target)
            print(f"GET /api/runs/{{id}} at {sizes.rate:g}/s for {sizes.seconds:g} s", flush=True)
            document["latency"] = request_latency(server, runs[-1]["run_id"], sizes)
            document["server_log_tail"] = (folder / "serve.log").read_text()[-2000:]
    document["machine"]["load_average_after"] = _load()
    _write(document, target)
    return document


def _write(document: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")


def _by_watchers(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions, by number of watchers."""
    found: dict[str, Any] = {}
    for count in sorted({run["watchers"] for run in runs}):
        chosen = [run for run in runs if run["watchers"] == count]
        summary: dict[str, Any] = {"repeats": len(chosen)}
        for key in chosen[0]:
            values: list[float] = [run[key] for run in chosen if isinstance(run.get(key), int | float)]
            if key not in ("watchers", "tasks") and len(values) == len(chosen):
                summary[key] = round(statistics.median(values), 3)
        per_task = [run["per_task_us"] for run in chosen]
        summary["per_task_us_min"], summary["per_task_us_max"] = min(per_task), max(per_task)
        found[str(count)] = summary
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 20 watchers (about 2 minutes)")
    parser.add_argument("--tasks", type=int, help="tasks of the run (over the mode's)")
    parser.add_argument("--watchers", type=int, help="SSE watchers (over the mode's)")
    parser.add_argument("--rate", type=float, help="requests per second of the latency phase")
    parser.add_argument("--seconds", type=float, help="how long the latency phase sends")
    parser.add_argument("--repeats", type=int, help="runs with each number of watchers")
    parser.add_argument("--timeout-s", type=float, help="a request of the latency phase not answered by then fails")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    changes = {
        key: value
        for key, value in (
            ("tasks", args.tasks),
            ("watchers", args.watchers),
            ("rate", args.rate),
            ("seconds", args.seconds),
            ("repeats", args.repeats),
            ("timeout_s", args.timeout_s),
        )
        if value is not None
    }
    sizes = replace(sizes, **changes)
    target = args.json or RESULTS_DIR / "serve.json"
    document = measure(sizes, quick=args.quick, target=target)
    show(serve_tables(document))
    print(f"written to {target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target}")


if __name__ == "__main__":
    main()
