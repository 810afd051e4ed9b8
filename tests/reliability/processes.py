"""Real ``orchestrate`` processes for the crash tests: start one, ``kill -9`` it, wait until its lease expired.

``orchestrate(*args)`` starts ``python -m orchestration ... -q`` from the repository with a short lease of the run
(``ORCHESTRATE_LEASE_S``), so that a resume after a kill waits only a moment. ``kill_9_repeatedly`` runs a project,
kills it at random points and resumes it, noting what the store held as succeeded at each kill.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from orchestration.models import utc_now
from orchestration.store import LEASE_ENV, RunStore
from tests.fakes.provider_server import FakeProviderServer

__all__ = ["REPO", "kill_9", "kill_9_repeatedly", "orchestrate", "wait_until_the_lease_expired"]

REPO = Path(__file__).resolve().parents[2]


def orchestrate(*args: str, lease_s: str = "0.5", stderr: IO[str] | int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """An ``orchestrate ... -q`` process; its run's lease lasts ``lease_s`` seconds, its stderr goes to ``stderr``."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration", *args, "-q"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env={**os.environ, LEASE_ENV: lease_s},
    )


def kill_9(process: subprocess.Popen[str]) -> None:
    """``kill -9`` the process and wait until it is gone."""
    process.kill()
    process.wait(timeout=30)


def wait_until_the_lease_expired(store: RunStore, run_id: str) -> None:
    """A resume is refused while the killed owner's lease lasts: wait (at most 10 s) until it expired."""
    for _ in range(1000):
        lease = store.lease(run_id)
        if lease is None or lease.expired(utc_now()):
            return
        time.sleep(0.01)
    raise AssertionError(f"the lease of run '{run_id}' did not expire: {store.lease(run_id)}")


def kill_9_repeatedly(
    server: FakeProviderServer,
    store: RunStore,
    project: Path,
    run_id: str,
    *,
    kills: int,
    rng: random.Random,
    requests_between: tuple[int, int],
    timeout_s: float,
) -> list[tuple[int, set[str]]]:
    """Run ``project`` as ``run_id``, then resume it, killing each process once ``server`` got a random number
    (``requests_between``) more requests (or at once if it ended, at the latest after ``timeout_s``): ``kills``
    times. Returns, per kill, how many requests the server had got and the tasks the store held as succeeded.
    The run is left ready to resume (its lease expired)."""
    snapshots: list[tuple[int, set[str]]] = []
    command = ["run", str(project), "--run-id", run_id, "--store", str(store.path)]
    for _ in range(kills):
        target = len(server.requests) + rng.randint(*requests_between)
        process = orchestrate(*command)
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and time.monotonic() < deadline:  # until the kill point, or it ended on its own
            with contextlib.suppress(TimeoutError):
                server.wait_for_requests(target, timeout=0.1)
                break
        kill_9(process)
        stored = store.load_run(run_id)  # a consistent store after kill -9
        succeeded = {t for t, entry in stored.tasks.items() if entry.result.succeeded}
        snapshots.append((len(server.requests), succeeded))
        command = ["resume", run_id, "--store", str(store.path)]
        wait_until_the_lease_expired(store, run_id)
    return snapshots
