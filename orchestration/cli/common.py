"""Pieces shared by CLI commands: options, exit codes, input parsing, loading a project with clean errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from agent_registry import AgentRegistry
    from orchestration.orchestrator import ProjectOrchestrator
    from orchestration.store import RunStore

__all__ = [
    "AgentsOpt",
    "AllowOutsideOpt",
    "AttachmentDirsOpt",
    "BudgetOpt",
    "ExitCode",
    "FileArg",
    "InputsOpt",
    "LogFormatOpt",
    "LogLevelOpt",
    "MaxConcurrencyOpt",
    "NoCacheOpt",
    "NoWaitOpt",
    "OtelOpt",
    "QuietOpt",
    "RayAddressOpt",
    "RayOpt",
    "RefreshCacheOpt",
    "ResultsOpt",
    "RunRefArg",
    "StoreOpt",
    "apply_cache_flags",
    "fail_invalid",
    "load_orchestrator",
    "load_registry",
    "open_run",
    "open_runs",
    "parse_inputs",
    "ray_address_argument",
    "ray_options",
    "stderr_console",
    "store_path",
]

FileArg = Annotated[Path, typer.Argument(help="Project task file (.yaml, .yml, .toml or .json).")]
AgentsOpt = Annotated[Path | None, typer.Option("--agents", help="Agents file to load.")]
InputsOpt = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="Override an input: KEY=VALUE (repeatable).")
]
MaxConcurrencyOpt = Annotated[
    int | None, typer.Option("--max-concurrency", min=1, help="Tasks running at once (overrides the file).")
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Run store (SQLite) [default: $ORCHESTRATE_STORE, else .orchestrate/runs.db in the project file's"
        " folder for `run FILE`, in the current folder otherwise].",
    ),
]
RunRefArg = Annotated[
    str, typer.Argument(metavar="RUN", help="A run id, a unique prefix of one, or `latest` (see `orchestrate runs`).")
]
ResultsOpt = Annotated[Path | None, typer.Option("--results", help="Write the run as JSON to this path.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display: only the run id, on stderr.")]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="console or json.")]
NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="Stop with exit code 3 (run status waiting) as soon as nothing can progress without a review decision.",
    ),
]
AttachmentDirsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--attachment-dir",
        metavar="DIR",
        envvar="ORCHESTRATE_ATTACHMENT_DIRS",
        help="A folder task attachments may also come from, besides the project file's (repeatable; the"
        " variable takes folders separated by ':').",
    ),
]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option("--allow-outside", help="Let tasks' output_file paths lead outside the project file's folder."),
]
OtelOpt = Annotated[
    bool,
    typer.Option(
        "--otel",
        help="Trace the run with OpenTelemetry, exported with OTLP where OTEL_EXPORTER_OTLP_* say (also"
        " ORCHESTRATE_OTEL=1; needs the otel extra).",
    ),
]


RayOpt = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Run on Ray (the ray extra): code steps as Ray tasks, local models as pools of Ray actors; a local"
        " cluster is started for the run (and stopped after it) unless an address follows (--ray ADDRESS, the same"
        " as --ray-address ADDRESS).",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDRESS",
        help="The Ray cluster to run on (implies --ray): auto (the one 'ray start' runs here), ray://HOST:10001,"
        " or HOST:PORT.",
    ),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        min=0,
        help="Cap what the run spends, in USD (over defaults.budget): a call that could go above it is not made.",
    ),
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Neither use nor keep answers in the answer cache (every task is called).")
]
RefreshCacheOpt = Annotated[
    bool, typer.Option("--refresh-cache", help="Call every task's model and keep the new answers in the cache.")
]


class ExitCode(IntEnum):
    OK = 0
    TASKS_FAILED = 1
    INVALID_INPUT = 2
    WAITING = 3
    """``--no-wait``: the run stopped where nothing could progress without a review decision."""
    INTERRUPTED = 130


def stderr_console() -> Console:
    """The console for progress, summaries and messages (see :func:`console`)."""
    return console(stderr=True)


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr); without a terminal (CI logs, pipes, files) it never wraps or cuts:
    lines and tables are written whole."""
    from rich.console import Console

    terminal = Console(stderr=stderr, highlight=False)
    if terminal.is_terminal:
        return terminal
    return Console(stderr=stderr, highlight=False, width=100_000, soft_wrap=True)


def store_path(store: Path | None, project_file: Path | None = None) -> Path:
    """The run store a command uses: ``--store``, else ``$ORCHESTRATE_STORE``, else ``.orchestrate/runs.db`` in
    the folder of ``project_file`` (``run FILE``) or in the current folder (commands without a project file);
    absolute, so that messages say which file was read."""
    from orchestration.store import default_store_path

    return (store if store is not None else default_store_path(project_file=project_file)).absolute()


def open_run(store: Path | None, ref: str) -> tuple[RunStore, str]:
    """The run store (see :func:`store_path`) and the id of the run ``ref`` names (an id, a unique prefix of one,
    or ``latest``); when there is no such run, say which store was read and exit 2."""
    run_store, (run_id,) = open_runs(store, [ref])
    return run_store, run_id


def open_store(path: Path) -> RunStore:
    """The run store at ``path``; a bad ``$ORCHESTRATE_LEASE_S`` exits 2 with its message."""
    from orchestration.store import RunStore

    try:
        return RunStore(path)
    except ValueError as exc:
        fail_invalid([str(exc)])


def open_runs(store: Path | None, refs: list[str]) -> tuple[RunStore, list[str]]:
    """:func:`open_run` for several references: the ids they name, each once."""
    run_store = open_store(store_path(store))
    try:
        return run_store, list(dict.fromkeys(run_store.resolve_run_id(ref) for ref in refs))
    except (KeyError, FileNotFoundError) as exc:
        fail_invalid([str(exc)])


def fail_invalid(lines: list[str]) -> NoReturn:
    """Print validation problems (no traceback) and exit 2."""
    console = stderr_console()
    console.print(f"[bold red]error:[/] {len(lines)} problem{'s' if len(lines) != 1 else ''} found", markup=True)
    for line in lines:
        console.print(f"  - {line}", markup=False, soft_wrap=True)
    raise typer.Exit(ExitCode.INVALID_INPUT)


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values stay strings."""
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail_invalid([f"--input {pair!r}: expected KEY=VALUE"])
        inputs[key.strip()] = value
    return inputs


def load_orchestrator(
    file: Path,
    *,
    inputs: dict[str, Any],
    agents_file: Path | None,
    check_agents: bool = True,
    **kwargs: Any,
) -> ProjectOrchestrator:
    """Load and validate ``file``; on any problem print it and exit 2."""
    from agent_registry import AgentConfigError, AgentRegistry
    from orchestration.issues import ProjectValidationError
    from orchestration.orchestrator import ProjectOrchestrator

    try:
        registry = AgentRegistry.default(agents_file)
        orchestrator = ProjectOrchestrator.from_file(file, registry=registry, inputs=inputs, **kwargs)
        orchestrator.validate(check_agents=check_agents)
    except ProjectValidationError as exc:
        fail_invalid([str(issue) for issue in exc.issues])
    except AgentConfigError as exc:
        fail_invalid([str(issue) for issue in exc.issues])
    return orchestrator


def load_registry(file: Path | None, agents_file: Path | None) -> AgentRegistry:
    """The agents a command sees: defaults and the agents file, plus ``file``'s own agents; exit 2 on errors."""
    from agent_registry import AgentConfigError, AgentRegistry

    if file is not None:
        orchestrator = load_orchestrator(file, inputs={}, agents_file=agents_file, check_agents=False)
        return orchestrator.validate(check_agents=False).registry
    try:
        return AgentRegistry.default(agents_file)
    except AgentConfigError as exc:
        fail_invalid([str(issue) for issue in exc.issues])


_RAY_ADDRESS = re.compile(r"auto|ray://\S+|[\w.-]+:\d+")


def ray_address_argument(args: Sequence[str]) -> list[str]:
    """``args`` with ``--ray ADDRESS`` and ``--ray=ADDRESS`` written as ``--ray-address ADDRESS``: the issue's
    ``--ray [ADDRESS]`` (Typer's options take a value always or never). A word after ``--ray`` is its address only
    when it reads as one (``auto``, ``ray://...``, ``HOST:PORT``) and names no file, so ``--ray project.yaml`` keeps
    ``project.yaml`` as the file."""
    out: list[str] = []
    words = iter(args)
    for word in words:
        if word.startswith("--ray="):
            out += ["--ray-address", word.removeprefix("--ray=")]
        elif word == "--ray":
            following = next(words, None)
            if following is not None and _RAY_ADDRESS.fullmatch(following) and not Path(following).exists():
                out += ["--ray-address", following]
            else:
                out += [word] if following is None else [word, following]
        else:
            out.append(word)
    return out


def ray_options(ray: bool, address: str | None) -> dict[str, Any]:
    """``load_orchestrator``'s keywords for ``--ray`` / ``--ray-address`` (none: as the file's ``defaults``)."""
    if not ray and address is None:
        return {}
    return {"executor": "ray", "ray_address": address}


def apply_cache_flags(orchestrator: ProjectOrchestrator, no_cache: bool, refresh_cache: bool) -> None:
    """``--no-cache`` / ``--refresh-cache``: the answer cache's mode for every task (exit 2 for both)."""
    if no_cache and refresh_cache:
        fail_invalid(["--no-cache and --refresh-cache contradict each other: give one"])
    if no_cache or refresh_cache:
        from orchestration.answer_cache import CacheMode

        orchestrator.cache_override = CacheMode.OFF if no_cache else CacheMode.REFRESH
