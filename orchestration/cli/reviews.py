"""Review decisions: ``orchestrate reviews`` lists the open review gates, ``orchestrate review`` decides one.

A gate (:mod:`orchestration.store.gates`) holds a task's request (``before``) or answer (``after``) until someone
approves, rejects or edits it. Decisions go to the run store from any process, without the run's lease: the first
one written wins, the same ``--decision-id`` again is a no-op, and every refusal exits 2 with the store's message.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from orchestration.cli.choices import choice_parser
from orchestration.cli.common import RunRefArg, StoreOpt

if TYPE_CHECKING:
    from datetime import datetime

    from orchestration.store import Gate, GateStage, RunStore

__all__ = ["review", "reviews"]


class Verdict(StrEnum):
    """What ``orchestrate review`` decides (a :class:`~orchestration.store.DecisionKind` a reviewer may record)."""

    APPROVE = "approve"
    REJECT = "reject"
    EDIT = "edit"


class Stage(StrEnum):
    """:class:`~orchestration.store.GateStage`'s values, without importing the store for ``--help``."""

    BEFORE = "before"
    AFTER = "after"


PREVIEW_CHARS = 60
"""A payload preview's length in ``orchestrate reviews``."""

_EDITED_TEXT = {"before": "prompt", "after": "output"}
"""The payload text ``$EDITOR`` opens for an ``edit`` of each stage (``--output`` / ``--prompt`` give it instead)."""


def reviews(
    run_ref: Annotated[
        str | None,
        typer.Argument(metavar="RUN", help="A run id, a unique prefix of one, or `latest` [default: every run]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of the open gates.")] = False,
    store: StoreOpt = None,
) -> None:
    """List the open review gates: tasks whose request or answer waits for a decision (`orchestrate review`).

    Gates whose time is up are first decided by their timeout (the store's clock), so they are not listed."""
    import json

    from orchestration.cli.common import open_run, open_store, store_path

    if run_ref is None:
        run_store, run_id = open_store(store_path(store)), None
    else:
        run_store, run_id = open_run(store, run_ref)
    run_store.expire_gates()
    gates = run_store.open_gates(run_id)
    if as_json:
        typer.echo(json.dumps([gate.as_json() for gate in gates], indent=2, ensure_ascii=False))
    elif not gates:
        of = f" of run {run_id}" if run_id is not None else ""
        typer.echo(f"no open review gates{of} in {run_store.path}", err=True)
    else:
        _print_table(gates, store)


def _print_table(gates: list[Gate], store: Path | None) -> None:
    import shlex

    from rich.table import Table
    from rich.text import Text

    from orchestration.cli.common import console
    from orchestration.models import utc_now

    now = utc_now()
    table = Table(show_edge=False)
    for column in ("run", "task", "stage", "fired", "age", "expires", "payload", "decide with"):
        table.add_column(column)
    store_option = f" --store {shlex.quote(str(store))}" if store is not None else ""
    for gate in gates:
        expires = "never"
        if gate.expires_at is not None:
            expires = f"in {_span((gate.expires_at - now).total_seconds())} ({gate.on_timeout})"
        command = f"orchestrate review {shlex.quote(gate.run_id)} {shlex.quote(gate.task_id)} approve{store_option}"
        age = _span((now - gate.requested_at).total_seconds())
        fired = ", ".join(gate.fired) or "-"
        if gate.reviewer is not None:
            fired += f"; reviewer {gate.reviewer['agent']}: {gate.reviewer['reason']}"
        cells = [gate.run_id, gate.task_id, str(gate.stage), fired, age, expires, _preview(gate), command]
        table.add_row(*(Text(cell) for cell in cells))  # Text: payloads are not rich markup
    console().print(table)


def _preview(gate: Gate) -> str:
    """The gate's editable text (its prompt or output), else its payload as JSON, on one line, cut."""
    import json

    text = gate.payload.get(_EDITED_TEXT[str(gate.stage)])
    if not isinstance(text, str):
        text = json.dumps(gate.payload, sort_keys=True, ensure_ascii=False)
    line = " ".join(text.split())
    return line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 3] + "..."


def _span(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d`` (whole units, rounded down)."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


TaskArg = Annotated[str, typer.Argument(metavar="TASK", help="The task's id.")]
VerdictArg = Annotated[
    Verdict, typer.Argument(metavar="VERDICT", parser=choice_parser(Verdict), help="approve, reject or edit.")
]


def _text_opt(name: str, what: str) -> object:
    return typer.Option(f"--{name}", help=f"edit: the new {what}.")


def _file_opt(name: str, what: str) -> object:
    return typer.Option(f"--{name}-file", help=f"edit: read the new {what} from this file.")


def review(
    run_ref: RunRefArg,
    task_id: TaskArg,
    verdict: VerdictArg,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Why; required by reject (the reason).")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Who decides [default: your user name].")] = None,
    output: Annotated[str | None, _text_opt("output", "answer (an `after` gate)")] = None,
    output_file: Annotated[Path | None, _file_opt("output", "answer (an `after` gate)")] = None,
    prompt: Annotated[str | None, _text_opt("prompt", "prompt (a `before` gate)")] = None,
    prompt_file: Annotated[Path | None, _file_opt("prompt", "prompt (a `before` gate)")] = None,
    system_prompt: Annotated[str | None, _text_opt("system-prompt", "system prompt (a `before` gate)")] = None,
    system_prompt_file: Annotated[Path | None, _file_opt("system-prompt", "system prompt (a `before` gate)")] = None,
    decision_id: Annotated[
        str | None,
        typer.Option("--decision-id", help="Name this decision: sending it again records nothing and exits 0."),
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option(
            "--digest", help="The payload digest you reviewed (`reviews --json`): refused if the gate shows another."
        ),
    ] = None,
    stage: Annotated[
        Stage | None,
        typer.Option(
            "--stage", metavar="before|after", parser=choice_parser(Stage), help="The gate of this stage only."
        ),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Decide a task's review gate: approve, reject (with --message) or edit it.

    An edit gives the new text with --output (an answer) or --prompt / --system-prompt (a request), or their
    -file forms; without them it opens $EDITOR on the gate's text when run in a terminal. Exit 0 when the decision
    is recorded (or was already, under the same --decision-id), 2 when it is refused (the message says why)."""
    import uuid

    from orchestration.cli.common import fail_invalid, open_run
    from orchestration.store import Decision, DecisionKind, GateError, GateStage

    edit = {
        key: text
        for key, text in (
            ("output", _text("output", output, output_file)),
            ("prompt", _text("prompt", prompt, prompt_file)),
            ("system_prompt", _text("system-prompt", system_prompt, system_prompt_file)),
        )
        if text is not None
    }
    if edit and verdict is not Verdict.EDIT:
        fail_invalid([f"{verdict}: --output, --prompt and --system-prompt (and their -file forms) are for edit only"])
    if verdict is Verdict.REJECT and not (message or "").strip():
        fail_invalid(["reject needs --message: the reason, for whoever reruns the task"])
    who = actor if actor is not None else _user()
    decision_id = decision_id or uuid.uuid4().hex
    gate_stage = GateStage(str(stage)) if stage is not None else None
    run_store, run_id = open_run(store, run_ref)
    if verdict is Verdict.EDIT and not edit:
        edit, digest = _edit_in_editor(run_store, run_id, task_id, gate_stage, decision_id, digest)
    try:
        decision = Decision(
            DecisionKind(str(verdict)), who, message, digest=digest, edit=edit or None, decision_id=decision_id
        )
        earlier = any(gate.decision_id == decision_id for gate in run_store.gates_of(run_id, task_id))
        gate = run_store.decide(run_id, task_id, decision, stage=gate_stage)
    except GateError as exc:
        fail_invalid([str(exc)])
    mine = (gate.decision, gate.actor, gate.message) == (decision.kind, decision.actor, decision.message)
    if earlier or not mine:
        _already_recorded(gate)
    typer.echo(f"recorded: {gate.decision} of {gate.label} by {gate.actor} (decision {gate.decision_id})")


def _already_recorded(gate: Gate) -> NoReturn:
    when = f" at {_utc(gate.decided_at)}" if gate.decided_at else ""
    typer.echo(
        f"already recorded: {gate.decision} of {gate.label} by {gate.actor}{when} (decision {gate.decision_id});"
        " nothing new was written"
    )
    raise typer.Exit()


def _utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _text(name: str, text: str | None, file: Path | None) -> str | None:
    """The text of ``--NAME`` or ``--NAME-file`` (one of them at most); a file that cannot be read exits 2."""
    from orchestration.cli.common import fail_invalid

    if file is None:
        return text
    if text is not None:
        fail_invalid([f"give --{name} or --{name}-file, not both"])
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail_invalid([f"--{name}-file {file}: no such file"])
    except (OSError, UnicodeDecodeError) as exc:
        fail_invalid([f"--{name}-file {file}: cannot read it: {exc}"])


def _user() -> str:
    """The OS user name, else ``cli``."""
    import getpass

    try:
        return getpass.getuser() or "cli"
    except (OSError, KeyError, ImportError):  # no login name in the environment nor the password database
        return "cli"


def _terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _edit_in_editor(
    run_store: RunStore,
    run_id: str,
    task_id: str,
    stage: GateStage | None,
    decision_id: str,
    digest: str | None,
) -> tuple[dict[str, str], str]:
    """The edit made in ``$EDITOR`` on the current gate's text, and the digest of the gate shown (so that the edit
    is refused if the task's payload changed meanwhile); exit 2 when there is no open gate or no terminal."""
    import click

    from orchestration.cli.common import fail_invalid
    from orchestration.store import GateConflictError, StaleGateError

    run_store.expire_gates()  # a gate whose time is up is decided, not opened in the editor
    gates = [gate for gate in run_store.gates_of(run_id, task_id) if stage is None or gate.stage == stage]
    if not gates:
        of = f" '{stage}'" if stage is not None else ""
        fail_invalid([f"task '{task_id}' of run '{run_id}' has no{of} review gate"])
    gate = gates[-1]
    if digest is not None and digest != gate.digest:
        fail_invalid([str(StaleGateError(gate, digest))])
    if gate.decision_id == decision_id:
        _already_recorded(gate)
    if not gate.open:
        fail_invalid([str(GateConflictError(gate))])
    key = _EDITED_TEXT[str(gate.stage)]
    option = key.replace("_", "-")
    if not _terminal():
        fail_invalid([f"edit of {gate.label}: give the new {key} with --{option} TEXT or --{option}-file F"])
    original = gate.payload.get(key)
    text = original if isinstance(original, str) else ""
    try:
        edited = click.edit(text, extension=".txt", require_save=True)
    except click.ClickException as exc:
        fail_invalid([f"$EDITOR: {exc.message}"])
    if edited is None or edited == text:
        fail_invalid([f"the {key} was not changed: nothing was recorded (approve to keep it)"])
    if not text.endswith("\n"):  # the newline the file was given (click) or the editor added at its end
        edited = edited.rstrip("\n")
    return {key: edited}, gate.digest
