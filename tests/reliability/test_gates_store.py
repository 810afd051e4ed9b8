"""Review gates in the run store: insert-or-get, first-write-wins decisions, stale digests, timeouts, and two
real processes deciding one gate at once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestration.store import (
    TIMEOUT_ACTOR,
    Decision,
    DecisionKind,
    GateConflictError,
    GateError,
    GateRequest,
    GateStage,
    LeaseLostError,
    RunStore,
    StaleGateError,
    TimeoutAction,
    UnknownGateError,
    payload_digest,
    run_store,
)

REPO = Path(__file__).resolve().parents[2]
PROMPT = {"system_prompt": "be brief", "prompt": "summarise the secret plan", "options": {"temperature": 0.2}}


def request(payload: dict[str, Any] = PROMPT, **fields: Any) -> GateRequest:
    values: dict[str, Any] = {
        "run_id": "r",
        "task_id": "t",
        "stage": GateStage.BEFORE,
        "attempt": 1,
        "payload": payload,
        "policy": "cost",
        "fired": ["cost_usd > 0.5"],
    }
    return GateRequest(**{**values, **fields})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = RunStore(tmp_path / "runs.db")
    yield opened
    opened.close()


def test_asking_for_a_gate_again_returns_the_stored_one_and_a_new_payload_is_a_new_gate(store: RunStore) -> None:
    gate = store.request_gate(request(timeout_s=60))
    assert gate.open and gate.digest == payload_digest(PROMPT) and gate.payload == PROMPT
    assert (gate.run_id, gate.task_id, gate.stage, gate.attempt) == ("r", "t", GateStage.BEFORE, 1)
    assert gate.fired == ["cost_usd > 0.5"] and gate.policy == "cost" and gate.on_timeout is TimeoutAction.FAIL
    assert gate.expires_at == gate.requested_at + timedelta(seconds=60)

    assert RunStore(store.path).request_gate(request(attempt=2, timeout_s=1)) == gate  # a resume: same gate
    changed = store.request_gate(request({**PROMPT, "prompt": "upstream changed"}, attempt=2))
    assert changed.digest != gate.digest and changed.attempt == 2 and changed.expires_at is None
    assert store.gates_of("r", "t") == [gate, changed]
    assert store.open_gates() == [changed]  # the older gate was superseded: the task waits on the new one
    assert store.request_gate(request()) == gate  # the old payload again: its gate is the current one again
    assert store.gates_of("r", "t") == [changed, gate] and store.open_gates("r") == [gate]
    assert store.open_gates("other") == [] and store.gates_of("r", "other") == []


def test_payload_digest_is_canonical() -> None:
    assert payload_digest({"b": 1, "a": [1, "é"]}) == payload_digest({"a": [1, "é"], "b": 1})
    assert payload_digest({"a": 1}) != payload_digest({"a": 2})


def test_approve_edit_and_reject(store: RunStore) -> None:
    for task in "abc":
        store.request_gate(request(task_id=task))
    answer = {"output": "42", "usage": {"tokens": 3}, "cost_usd": 0.1}
    store.request_gate(request(answer, task_id="c", stage=GateStage.AFTER))

    approved = store.decide("r", "a", Decision(DecisionKind.APPROVE, "alice", "fine"))
    assert approved.decision is DecisionKind.APPROVE and approved.actor == "alice" and approved.message == "fine"
    assert approved.decided_at is not None and approved.decision_id and not approved.open

    edit = {"prompt": "summarise the plan", "options": {"temperature": 0.0}}
    edited = store.decide("r", "b", Decision(DecisionKind.EDIT, "bob", edit=edit, digest=payload_digest(PROMPT)))
    assert edited.decision is DecisionKind.EDIT and edited.edit == edit and edited.payload == PROMPT

    with pytest.raises(GateError, match="an edit of a 'after' gate may change output, not 'prompt'"):
        store.decide("r", "c", Decision(DecisionKind.EDIT, "carol", edit={"prompt": "x"}))
    with pytest.raises(GateError, match="the edited 'output' must be a str"):
        store.decide("r", "c", Decision(DecisionKind.EDIT, "carol", edit={"output": 1}))
    rejected = store.decide("r", "c", Decision(DecisionKind.REJECT, "carol", "wrong answer"))
    assert rejected.stage is GateStage.AFTER and rejected.decision is DecisionKind.REJECT
    before_c = store.gates_of("r", "c")[0]
    assert before_c.open and store.open_gates() == []  # not current: c's answer's gate is its newest
    decided = store.decide("r", "c", Decision(DecisionKind.APPROVE, "dan"), stage=GateStage.BEFORE)
    assert decided.stage is GateStage.BEFORE and decided.actor == "dan" and store.open_gates() == []

    reread = RunStore(store.path)
    assert [g.decision for g in reread.gates_of("r", "c")] == [DecisionKind.APPROVE, DecisionKind.REJECT]
    assert reread.gates_of("r", "b") == [edited]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": DecisionKind.EDIT}, "an edit needs the edited content"),
        ({"kind": DecisionKind.APPROVE, "edit": {"prompt": "x"}}, "a approve has no edit"),
        ({"kind": DecisionKind.REJECT}, "a rejection needs a reason"),
        ({"kind": DecisionKind.FAIL}, "'fail' is recorded only by a gate's timeout"),
        ({"kind": DecisionKind.APPROVE, "actor": " "}, "a decision needs an actor"),
    ],
)
def test_malformed_decisions_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(GateError, match=message):
        Decision(**{"actor": "alice", **fields})


def test_the_same_decision_again_is_a_no_op_and_a_different_one_is_refused(store: RunStore) -> None:
    store.request_gate(request())
    decision = Decision(DecisionKind.APPROVE, "alice", decision_id="d-1")
    first = store.decide("r", "t", decision)
    assert first.decision_id == "d-1"
    assert store.decide("r", "t", decision) == first
    assert RunStore(store.path).decide("r", "t", Decision(DecisionKind.REJECT, "x", "no", decision_id="d-1")) == first

    with pytest.raises(GateConflictError) as conflict:
        store.decide("r", "t", Decision(DecisionKind.REJECT, "mallory", "no, the secret plan"))
    assert first.decided_at is not None
    when = f"{first.decided_at:%Y-%m-%d %H:%M:%S} UTC"
    assert str(conflict.value) == (
        f"gate 'before' of task 't' in run 'r' was already decided: approve by alice at {when} (decision d-1);"
        " this decision was not recorded"
    )
    assert conflict.value.gate == first and isinstance(conflict.value, ValueError)
    assert store.gates_of("r", "t") == [first]


def test_a_decision_on_an_old_payload_is_stale(store: RunStore) -> None:
    old = store.request_gate(request())
    new = store.request_gate(request({**PROMPT, "prompt": "summarise the new secret plan"}))
    with pytest.raises(StaleGateError) as stale:
        store.decide("r", "t", Decision(DecisionKind.APPROVE, "alice", digest=old.digest))
    message = str(stale.value)
    assert old.digest[:12] in message and new.digest[:12] in message and "secret" not in message
    assert stale.value.current == new.digest and stale.value.seen == old.digest
    assert all(g.open for g in store.gates_of("r", "t"))
    assert store.decide("r", "t", Decision(DecisionKind.APPROVE, "alice", digest=new.digest)).digest == new.digest


def test_deciding_a_gate_that_does_not_exist(store: RunStore, tmp_path: Path) -> None:
    with pytest.raises(UnknownGateError, match="no run store at"):
        RunStore(tmp_path / "none.db").decide("r", "t", Decision(DecisionKind.APPROVE, "alice"))
    store.request_gate(request())
    with pytest.raises(UnknownGateError, match="task 'u' of run 'r' has no review gate"):
        store.decide("r", "u", Decision(DecisionKind.APPROVE, "alice"))
    with pytest.raises(UnknownGateError, match="task 't' of run 'r' has no 'after' review gate"):
        store.decide("r", "t", Decision(DecisionKind.APPROVE, "alice"), stage=GateStage.AFTER)


@pytest.mark.parametrize("action", list(TimeoutAction))
def test_a_timeout_decides_by_the_stores_clock(store: RunStore, action: TimeoutAction) -> None:
    gate = store.request_gate(request(timeout_s=30, on_timeout=action))
    untimed = store.request_gate(request(task_id="u"))
    assert gate.expires_at is not None
    assert store.expire_gates(now=gate.expires_at - timedelta(seconds=1)) == []

    reader = RunStore(store.path)  # another process: the run need not be running
    (expired,) = reader.expire_gates(now=gate.expires_at + timedelta(hours=1))
    reader.close()
    assert expired.decision == DecisionKind(str(action)) and expired.actor == TIMEOUT_ACTOR
    assert expired.decided_at == gate.expires_at and expired.decision_id and expired.decision_id.startswith("timeout")
    assert store.open_gates() == [untimed] and store.expire_gates(now=gate.expires_at + timedelta(days=9)) == []
    with pytest.raises(GateConflictError, match=f"already decided: {action} by timeout at"):
        store.decide("r", "t", Decision(DecisionKind.APPROVE, "late"))


def test_a_decision_after_the_timeout_loses_to_it_even_before_anyone_expired_the_gate(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = store.request_gate(request(timeout_s=5, on_timeout=TimeoutAction.REJECT))
    assert gate.expires_at is not None
    later = gate.expires_at + timedelta(seconds=1)
    monkeypatch.setattr(run_store, "utc_now", lambda: later)  # the store's clock
    with pytest.raises(GateConflictError, match="already decided: reject by timeout at") as conflict:
        store.decide("r", "t", Decision(DecisionKind.APPROVE, "late"))
    (recorded,) = RunStore(store.path).gates_of("r", "t")  # the timeout was committed with the refusal
    assert (
        recorded == conflict.value.gate and recorded.actor == TIMEOUT_ACTOR and recorded.decided_at == gate.expires_at
    )
    assert store.expire_gates() == []


async def test_a_session_that_lost_its_lease_cannot_open_gates(tmp_path: Path) -> None:
    store, successor = RunStore(tmp_path / "runs.db"), RunStore(tmp_path / "runs.db")
    run = {"project": "p", "project_hash": "h", "file": None, "inputs": {}, "task_ids": ["t"]}
    await store.begin_run("r", **run)
    assert store.request_gate(request()).open
    with closing(sqlite3.connect(store.path)) as connection, connection:  # the owner stopped renewing long ago
        connection.execute("UPDATE runs SET lease_expires = '2000-01-01T00:00:00+00:00' WHERE run_id = 'r'")
    await successor.begin_run("r", **run)
    with pytest.raises(LeaseLostError):
        store.request_gate(request({"prompt": "new"}))
    assert len(successor.gates_of("r", "t")) == 1
    assert successor.decide("r", "t", Decision(DecisionKind.APPROVE, "alice")).actor == "alice"  # no lease needed
    store.close()
    successor.close()


def test_a_store_from_before_gates_opens_and_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as connection, connection:  # a store without the gates table
        connection.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, project_hash TEXT NOT NULL,"
            " file TEXT, inputs TEXT NOT NULL, task_ids TEXT NOT NULL, status TEXT NOT NULL,"
            " started_at TEXT NOT NULL, finished_at TEXT, sessions INTEGER NOT NULL DEFAULT 1, agents_file TEXT)"
        )
    store = RunStore(path)
    assert store.open_gates() == []
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'gates'").fetchone() == ("gates",)
    gate = store.request_gate(request())
    assert store.decide("r", "t", Decision(DecisionKind.APPROVE, "alice")).digest == gate.digest
    store.close()


RACER = """
import json, sys, time
from pathlib import Path
from orchestration.store import Decision, DecisionKind, GateConflictError, RunStore

path, name, decision_id, folder = sys.argv[1:]
store = RunStore(path)
store.open_gates()  # connected and ready
Path(folder, name + ".ready").touch()
deadline = time.monotonic() + 30
while not Path(folder, "go").exists():
    assert time.monotonic() < deadline, "no go"
    time.sleep(0.001)
try:
    gate = store.decide("r", "t", Decision(DecisionKind.APPROVE, name, decision_id=decision_id))
    print(json.dumps({"won": name, "actor": gate.actor, "at": str(gate.decided_at), "id": gate.decision_id}))
except GateConflictError as exc:
    print(json.dumps({"conflict": str(exc)}))
store.close()
"""


def race(path: Path, tmp_path: Path, decision_ids: tuple[str, str]) -> list[dict[str, str]]:
    """Two processes decide the gate of task ``t`` at once (released together once both are ready)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    names = ("alice", "bob")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path), name, decision_id, str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, decision_id in zip(names, decision_ids, strict=True)
    ]
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"{name}.ready").exists() for name in names):
            assert time.monotonic() < deadline and all(p.poll() is None for p in racers), "the racers did not start"
            time.sleep(0.005)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=30) for p in racers]
    finally:
        for process in racers:
            process.kill()
    assert all(p.returncode == 0 for p in racers), [err for _, err in outputs]
    return [json.loads(out) for out, _ in outputs]


def test_of_two_processes_deciding_at_once_the_first_write_wins(store: RunStore, tmp_path: Path) -> None:
    store.request_gate(request())
    answers = race(store.path, tmp_path, ("d-alice", "d-bob"))
    (won,) = [a for a in answers if "won" in a]
    (lost,) = [a for a in answers if "conflict" in a]
    assert won["actor"] == won["won"] and f"approve by {won['won']} at" in lost["conflict"]
    (gate,) = store.gates_of("r", "t")
    assert gate.actor == won["won"] and gate.decision_id == f"d-{won['won']}"


def test_two_processes_sending_the_same_decision_get_the_same_answer(store: RunStore, tmp_path: Path) -> None:
    store.request_gate(request())
    first, second = race(store.path, tmp_path, ("d-1", "d-1"))
    assert {k: v for k, v in first.items() if k != "won"} == {k: v for k, v in second.items() if k != "won"}
    (gate,) = store.gates_of("r", "t")
    assert gate.decision_id == "d-1" and gate.actor == first["actor"] and str(gate.decided_at) == first["at"]
