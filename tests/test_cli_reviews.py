"""``orchestrate reviews`` and ``orchestrate review``: listing open gates, deciding them, every refusal exit 2,
and two real processes deciding one gate at once."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from orchestration.cli import reviews as reviews_module
from orchestration.cli.app import app
from orchestration.store import TIMEOUT_ACTOR, DecisionKind, GateRequest, GateStage, RunStore, TimeoutAction

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

PROMPT = {"system_prompt": "be brief", "prompt": "summarise [bold]the[/bold]\nplan " + "word " * 30, "options": {}}
ANSWER = {"output": "forty-two", "usage": {"input_tokens": 3, "output_tokens": 1}, "cost_usd": 0.7}


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def gate_request(task_id: str, stage: GateStage, payload: dict[str, Any], **fields: Any) -> GateRequest:
    return GateRequest(
        run_id="r",
        task_id=task_id,
        stage=stage,
        attempt=1,
        payload=payload,
        policy="cost",
        fired=["cost > 0.5"],
        **fields,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    """Run ``r`` (begun, so it holds the lease) with gates: ``a`` before (1 h, then fail), ``b`` after (no
    timeout), ``late`` before (its time is already up: rejected by the timeout once anyone looks)."""
    opened = RunStore(tmp_path / "runs.db")
    begin = partial(opened.begin_run, "r", project="p", project_hash="h", file=None, inputs={})
    anyio.run(partial(begin, task_ids=["a", "b", "late"]))
    opened.request_gate(gate_request("a", GateStage.BEFORE, PROMPT, timeout_s=3600))
    opened.request_gate(gate_request("b", GateStage.AFTER, ANSWER))
    opened.request_gate(gate_request("late", GateStage.BEFORE, PROMPT, timeout_s=0, on_timeout=TimeoutAction.REJECT))
    yield opened
    opened.close()


def test_reviews_lists_the_open_gates_one_line_each(store: RunStore) -> None:
    path = str(store.path)
    code, output = invoke("reviews", "--store", path)
    assert code == 0, output
    (a_line,) = [line for line in output.splitlines() if " a " in line and "before" in line]
    assert "cost > 0.5" in a_line and "(fail)" in a_line and "in 59m" in a_line
    assert "summarise [bold]the[/bold] plan word word" in a_line and "word ..." in a_line  # one line, cut, no markup
    assert f"orchestrate review r a approve --store {path}" in a_line
    (b_line,) = [line for line in output.splitlines() if " b " in line]
    assert "after" in b_line and "forty-two" in b_line and "never" in b_line
    assert f"orchestrate review r b approve --store {path}" in b_line
    assert " late " not in output  # its time was up: the timeout decided it
    (late,) = store.gates_of("r", "late")
    assert late.decision is DecisionKind.REJECT and late.actor == TIMEOUT_ACTOR

    assert invoke("reviews", "latest", "--store", path)[1] == output  # the same run, named
    code, output = invoke("reviews", "nope", "--store", path)
    assert code == 2 and f"no run 'nope' in {path}" in output


def test_reviews_json(store: RunStore) -> None:
    code, output = invoke("reviews", "r", "--json", "--store", str(store.path))
    assert code == 0, output
    a, b = json.loads(output)
    (gate_a,) = store.gates_of("r", "a")
    assert a == {
        "run_id": "r",
        "task_id": "a",
        "stage": "before",
        "attempt": 1,
        "digest": gate_a.digest,
        "payload": PROMPT,
        "fired": ["cost > 0.5"],
        "requested_at": gate_a.requested_at.isoformat(),
        "expires_at": gate_a.expires_at.isoformat() if gate_a.expires_at else None,
        "reviewer": None,
    }
    assert a["expires_at"] is not None and b["task_id"] == "b" and b["stage"] == "after" and b["expires_at"] is None
    verdict = {"agent": "judge", "verdict": "escalate", "reason": "names a customer"}
    store.note_reviewer(gate_a, verdict)
    assert json.loads(invoke("reviews", "r", "--json", "--store", str(store.path))[1])[0]["reviewer"] == verdict
    table = invoke("reviews", "r", "--store", str(store.path))[1]
    assert "reviewer judge: names a customer" in table


def test_reviews_of_an_empty_or_missing_store(tmp_path: Path) -> None:
    path = str(tmp_path / "none.db")
    code, output = invoke("reviews", "--store", path)
    assert code == 0 and f"no open review gates in {path}" in output
    assert invoke("reviews", "--json", "--store", path) == (0, "[]\n")


def test_approve_by_the_os_user(store: RunStore) -> None:
    code, output = invoke("review", "r", "a", "approve", "--store", str(store.path))
    assert code == 0, output
    user = getpass.getuser()
    assert output.startswith(f"recorded: approve of gate 'before' of task 'a' in run 'r' by {user} (decision ")
    (gate,) = store.gates_of("r", "a")
    assert gate.decision is DecisionKind.APPROVE and gate.actor == user
    assert gate.decision_id and gate.decision_id in output
    code, output = invoke("reviews", "--json", "--store", str(store.path))
    assert [g["task_id"] for g in json.loads(output)] == ["b"]


def test_reject_needs_a_reason(store: RunStore) -> None:
    path = str(store.path)
    code, output = invoke("review", "r", "b", "reject", "--store", path)
    assert code == 2 and "reject needs --message" in output and "Traceback" not in output
    assert store.gates_of("r", "b")[0].open
    code, output = invoke("review", "r", "b", "reject", "-m", "wrong sum", "--actor", "carol", "--store", path)
    assert code == 0 and "recorded: reject of gate 'after' of task 'b' in run 'r' by carol" in output
    (gate,) = store.gates_of("r", "b")
    assert gate.decision is DecisionKind.REJECT and gate.message == "wrong sum"


def test_edit_with_text_or_a_file(store: RunStore, tmp_path: Path) -> None:
    path = str(store.path)
    code, output = invoke("review", "r", "b", "edit", "--prompt", "x", "--store", path)
    assert code == 2 and "an edit of a 'after' gate may change output, not 'prompt'" in output
    code, output = invoke("review", "r", "b", "edit", "--output-file", str(tmp_path / "gone.txt"), "--store", path)
    assert code == 2 and f"--output-file {tmp_path / 'gone.txt'}: no such file" in output
    code, output = invoke("review", "r", "b", "approve", "--output", "x", "--store", path)
    assert code == 2 and "are for edit only" in output
    code, output = invoke("review", "r", "b", "edit", "--output", "x", "--output-file", "f", "--store", path)
    assert code == 2 and "give --output or --output-file, not both" in output
    assert store.gates_of("r", "b")[0].open

    answer = tmp_path / "answer.txt"
    answer.write_text("forty-three\n", encoding="utf-8")
    code, output = invoke("review", "r", "b", "edit", "--output-file", str(answer), "--actor", "ed", "--store", path)
    assert code == 0 and "recorded: edit of gate 'after' of task 'b' in run 'r' by ed" in output
    assert store.gates_of("r", "b")[0].edit == {"output": "forty-three\n"}

    code, output = invoke(
        "review", "r", "a", "edit", "--prompt", "summarise", "--system-prompt", "be kind", "--store", path
    )
    assert code == 0, output
    assert store.gates_of("r", "a")[0].edit == {"prompt": "summarise", "system_prompt": "be kind"}


def test_the_same_decision_id_again_exits_0_and_says_it_was_recorded_already(store: RunStore) -> None:
    args = ("review", "r", "a", "approve", "--actor", "alice", "--decision-id", "d-1", "--store", str(store.path))
    code, first = invoke(*args)
    assert code == 0 and first == "recorded: approve of gate 'before' of task 'a' in run 'r' by alice (decision d-1)\n"
    code, again = invoke(*args)
    assert code == 0 and again.startswith("already recorded: approve of gate 'before' of task 'a' in run 'r' by alice")
    assert "(decision d-1); nothing new was written" in again
    (gate,) = store.gates_of("r", "a")
    assert gate.actor == "alice" and gate.decision_id == "d-1"


def test_a_conflicting_decision_names_who_decided(store: RunStore) -> None:
    path = str(store.path)
    assert invoke("review", "r", "a", "approve", "--actor", "alice", "--decision-id", "d-1", "--store", path)[0] == 0
    code, output = invoke("review", "r", "a", "reject", "-m", "no", "--actor", "bob", "--store", path)
    assert code == 2 and "Traceback" not in output
    assert "gate 'before' of task 'a' in run 'r' was already decided: approve by alice at " in output
    assert "(decision d-1); this decision was not recorded" in output
    assert store.gates_of("r", "a")[0].actor == "alice"


def test_a_stale_digest_is_refused(store: RunStore) -> None:
    (old,) = store.gates_of("r", "a")
    store.request_gate(gate_request("a", GateStage.BEFORE, {**PROMPT, "prompt": "upstream changed"}))
    code, output = invoke("review", "r", "a", "approve", "--digest", old.digest, "--store", str(store.path))
    assert code == 2 and f"the decision was made on payload {old.digest[:12]}" in output
    assert all(gate.open for gate in store.gates_of("r", "a"))


def test_unknown_gates_and_runs(store: RunStore) -> None:
    path = str(store.path)
    code, output = invoke("review", "r", "zz", "approve", "--store", path)
    assert code == 2 and "task 'zz' of run 'r' has no review gate" in output and "Traceback" not in output
    code, output = invoke("review", "r", "b", "approve", "--stage", "before", "--store", path)
    assert code == 2 and "task 'b' of run 'r' has no 'before' review gate" in output
    code, output = invoke("review", "nope", "b", "approve", "--store", path)
    assert code == 2 and f"no run 'nope' in {path}" in output
    code, output = invoke("review", "r", "b", "maybe", "--store", path)
    assert code == 2 and "'maybe' is not one of 'approve', 'reject', 'edit'" in output


def test_edit_without_text_needs_a_terminal(store: RunStore) -> None:
    path = str(store.path)
    code, output = invoke("review", "r", "b", "edit", "--store", path)
    assert code == 2 and "give the new output with --output TEXT or --output-file F" in output
    code, output = invoke("review", "r", "a", "edit", "--store", path)
    assert code == 2 and "give the new prompt with --prompt TEXT or --prompt-file F" in output
    code, output = invoke("review", "r", "late", "edit", "--store", path)  # timed out: no editor for it
    assert code == 2 and "already decided: reject by timeout" in output
    assert store.gates_of("r", "b")[0].open and store.gates_of("r", "a")[0].open


def test_edit_in_the_editor(store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import pathlib, sys\np = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('two', 'three') + '\\n')\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setattr(reviews_module, "_terminal", lambda: True)
    code, output = invoke("review", "r", "b", "edit", "--actor", "ed", "--store", str(store.path))
    assert code == 0 and "recorded: edit of gate 'after' of task 'b' in run 'r' by ed" in output
    (gate,) = store.gates_of("r", "b")
    assert gate.edit == {"output": "forty-three"}  # the newline the editor added at the end is not kept


BARRIER = """
import runpy, sys
import orchestration.cli.app, orchestration.store  # imported before the barrier: both start deciding together
print("ready", flush=True)
sys.stdin.readline()
runpy.run_module("orchestration", run_name="__main__", alter_sys=True)  # what `python -m orchestration` does
"""


def race(store: Path, decision_ids: tuple[str, str]) -> dict[str, tuple[int, str, str]]:
    """``python -m orchestration review r a approve`` by alice and by bob, released at once (each waits on its
    stdin once imported; the test writes to both after reading both ready lines); exit code, stdout, stderr each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    review = ("review", "r", "a", "approve", "--store", str(store))
    commands = {
        actor: [sys.executable, "-c", BARRIER, *review, "--actor", actor, "--decision-id", decision_id]
        for actor, decision_id in zip(("alice", "bob"), decision_ids, strict=True)
    }
    processes = {
        actor: subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for actor, command in commands.items()
    }
    try:
        for process in processes.values():
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes.values():
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = {actor: process.communicate(timeout=60) for actor, process in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
    return {actor: (processes[actor].returncode, out, err) for actor, (out, err) in outputs.items()}


def test_two_processes_deciding_one_gate_at_once(store: RunStore) -> None:
    answers = race(store.path, ("d-alice", "d-bob"))
    (winner,) = [actor for actor, (code, _, _) in answers.items() if code == 0]
    (loser,) = [actor for actor, (code, _, _) in answers.items() if code == 2]
    _, out, err = answers[winner]
    assert out == f"recorded: approve of gate 'before' of task 'a' in run 'r' by {winner} (decision d-{winner})\n", err
    _, out, err = answers[loser]
    assert out == "" and f"already decided: approve by {winner} at " in err and f"(decision d-{winner})" in err
    assert "Traceback" not in err
    (gate,) = store.gates_of("r", "a")
    assert gate.actor == winner and gate.decision_id == f"d-{winner}"


def test_two_processes_sending_the_same_decision_id_both_exit_0(store: RunStore) -> None:
    answers = race(store.path, ("d-1", "d-1"))
    assert all(code == 0 for code, _, _ in answers.values()), answers
    (gate,) = store.gates_of("r", "a")
    assert gate.decision_id == "d-1" and gate.actor in ("alice", "bob")
    recorded = f"recorded: approve of gate 'before' of task 'a' in run 'r' by {gate.actor} (decision d-1)\n"
    other = "bob" if gate.actor == "alice" else "alice"
    assert answers[gate.actor][1] == recorded
    assert answers[other][1].startswith(
        f"already recorded: approve of gate 'before' of task 'a' in run 'r' by {gate.actor}"
    )
