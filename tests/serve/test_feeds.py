"""The streams of one run share one reader of its events: each watcher gets every event once, in order, whenever it
joined and wherever it resumed, and the store is read as often as for one watcher. The runs list follows running
runs the same way: only their new events are read."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

import anyio
import httpx

from orchestration.serve import sse
from orchestration.serve.feeds import RunFeeds
from orchestration.serve.views import FollowedRuns, task_statuses
from orchestration.store import RunStore, StoredEvent
from tests.serve.conftest import GATED, Served, project, start, wait_for_run, wait_for_status
from tests.serve.test_events import run_in

_ID = re.compile(rb"^id: (\d+)\r$", re.MULTILINE)


async def _watch(feeds: RunFeeds, run_id: str, after: int = 0) -> list[int]:
    ids: list[int] = []
    async for chunk in sse.run_events(feeds.feed(run_id), after):
        ids += [int(found) for found in _ID.findall(chunk)]
    return ids


def test_watchers_of_a_run_share_one_read(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_in(store, "r1")
    stored = [event.seq for event in store.events("r1")]
    feeds = RunFeeds(store, poll_s=0.01)

    async def main() -> None:
        found: list[list[int]] = [[] for _ in range(12)]

        async def watcher(index: int, after: int) -> None:
            found[index] = await _watch(feeds, "r1", after)

        feed = feeds.feed("r1")  # held: the watchers below share it
        async with anyio.create_task_group() as group:
            for index in range(10):
                group.start_soon(watcher, index, 0)
            group.start_soon(watcher, 10, stored[3])
        assert found[:10] == [stored] * 10 and found[10] == stored[4:]
        assert feed.reads == 1  # the run had stopped: one read found all of it, for every watcher
        await watcher(11, stored[-2])  # a late watcher of the same feed: nothing read again
        assert found[11] == stored[-1:] and feed.reads == 1

    anyio.run(main)
    assert store.events("r1") and anyio.run(_watch, feeds, "nope") == []  # an unknown (deleted) run: no events


def test_early_and_late_watchers_of_a_live_run_get_every_event_once_in_order(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("watched", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        store = RunStore(served.store)
        before = [event.seq for event in store.events(run_id)]  # up to the gate's review_requested
        received: dict[str, list[int]] = {}
        reading = threading.Barrier(4)

        def watch(name: str, headers: dict[str, str], wait: bool) -> None:
            ids: list[int] = []
            with (
                httpx.Client(base_url=served.url, headers=client.headers, timeout=30) as own,
                own.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as stream,
            ):
                for line in stream.iter_lines():
                    if line.startswith("id: "):
                        ids.append(int(line[4:]))
                    if wait and line == "event: review_requested":
                        wait = False
                        reading.wait(timeout=30)  # every early watcher is streaming before the gate is decided
            received[name] = ids

        early = [threading.Thread(target=watch, args=(f"early{i}", {}, True)) for i in range(3)]
        for thread in early:
            thread.start()
        reading.wait(timeout=30)
        response = client.post(f"/api/runs/{run_id}/tasks/gated/review", json={"decision": "approve"})
        assert response.status_code == 200
        late = threading.Thread(target=watch, args=("late", {}, False))
        late.start()
        resumed = threading.Thread(target=watch, args=("resumed", {"Last-Event-ID": str(before[2])}, False))
        resumed.start()
        for thread in [*early, late, resumed]:
            thread.join(timeout=60)
        wait_for_run(client, run_id, "success")
        every = [event.seq for event in store.events(run_id)]
        assert every[: len(before)] == before and every == sorted(set(every))
        assert {name: ids for name, ids in received.items() if name != "resumed"} == {
            name: every for name in ("early0", "early1", "early2", "late")
        }
        assert received["resumed"] == every[3:]


class _ReadsLogged(RunStore):
    """A store that notes where each read of a run's events started."""

    afters: list[int]

    def events(self, run_id: str | None = None, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        self.afters.append(after)
        return super().events(run_id, after, limit)


def test_followed_runs_read_only_new_events_and_agree_with_a_full_replay(served: Served) -> None:
    store = _ReadsLogged(served.store)
    followed = FollowedRuns()

    def replayed(run_id: str) -> dict[str, str]:
        record = store.get_run(run_id)
        return task_statuses(record.task_ids, store.outcomes([run_id])[run_id], store.events(run_id)).statuses

    def shown(run_id: str, sessions: int | None = None) -> dict[str, str]:
        record = store.get_run(run_id)
        record = replace(record, sessions=sessions or record.sessions)
        store.afters = []
        statuses = followed.statuses(store, record, store.outcomes([run_id])[run_id])
        read_from.append(store.afters[0])
        return statuses

    read_from: list[int] = []

    with served.client() as client:
        run_id = start(client, project=project("followed", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        assert shown(run_id) == replayed(run_id) and shown(run_id)["gated"] == "waiting"
        assert client.post(f"/api/runs/{run_id}/tasks/gated/review", json={"decision": "approve"}).status_code == 200
        wait_for_run(client, run_id, "success")
        assert shown(run_id) == replayed(run_id) == dict.fromkeys(["a", "b", "gated", "after"], "success")
        assert shown(run_id, sessions=2) == replayed(run_id)  # another session: replayed from the start again
        first, *later, again = read_from
        assert first == 0 and all(after > 0 for after in later) and again == 0
        listed = client.get("/api/runs").json()["runs"]
        assert next(run for run in listed if run["run_id"] == run_id)["counts"]["success"] == 4
