"""Task, result and project-file models: the public contracts of the engine."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from pydantic.json_schema import SkipJsonSchema

from agent_registry import BudgetLimits
from llm_abstractions import ErrorType, GenerationOptions, Message, Usage
from orchestration.review import ReviewSetting

__all__ = [
    "TASK_ID_PATTERN",
    "AgentTask",
    "AttachmentSource",
    "AttemptRecord",
    "BatchDefaults",
    "BatchFallback",
    "BatchRecord",
    "Dependency",
    "ErrorInfo",
    "ExecutionResult",
    "ExecutionStatus",
    "Executor",
    "MappedResult",
    "OutputFormat",
    "ProjectDefaults",
    "ProjectSpec",
    "ReviewRecord",
    "StepFunction",
    "StepResources",
    "TaskType",
    "TriggerRule",
    "TruncationPolicy",
    "UtcDatetime",
    "utc_now",
]

TASK_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"


def _iso_utc(value: datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat() writes the six digits whenever there are microseconds, and is twice as fast as with timespec
    return value.isoformat() if value.microsecond else value.isoformat(timespec="microseconds")


UtcDatetime = Annotated[datetime, PlainSerializer(_iso_utc, return_type=str)]
"""A datetime written as ISO 8601 in UTC with six fractional digits."""


utc_now: Callable[[], datetime] = partial(datetime.now, UTC)
"""The current time in UTC (a partial: no Python frame per call on the hot path)."""


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Executor(StrEnum):
    """Where a run's work runs (``defaults.executor``)."""

    LOCAL = "local"
    RAY = "ray"


class TaskType(StrEnum):
    """What a task runs: a model (``llm``) or a Python function (``python``, a code step)."""

    LLM = "llm"
    PYTHON = "python"


class TriggerRule(StrEnum):
    """When a task with dependencies runs, given how they ended."""

    ALL_SUCCESS = "all_success"
    """Every dependency succeeded (the default); otherwise the task is skipped."""
    ALL_DONE = "all_done"
    """Every dependency ended, whatever its status (reports, clean-ups)."""
    NONE_FAILED = "none_failed"
    """Every dependency ended and none failed: skipped ones are fine (joins after a branch)."""
    ONE_SUCCESS = "one_success"
    """Every dependency ended and at least one succeeded."""


StepFunction = Callable[[Any], Any]
"""A code step's function: called with one :class:`~orchestration.code_steps.StepContext`, sync or async."""


class TruncationPolicy(StrEnum):
    """What becomes of a task whose non-empty answer was cut off by ``max_tokens``."""

    ACCEPT = "accept"
    FAIL = "fail"


class ExecutionStatus(StrEnum):
    """How a task ended (the final states of :class:`orchestration.lifecycle.TaskState`)."""

    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    """The task did not run: its ``when`` was false, or its dependencies did not end as its trigger rule needs."""
    CANCELLED = "cancelled"


class AttachmentSource(BaseModel):
    """An attachment whose media type is given, for a URL or file whose name does not tell it."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    source: str = Field(min_length=1)
    """A path (relative to the project file's folder), an ``http(s)`` URL, or a template that gives one."""
    media_type: str | None = None
    """``image/png``, ``image/jpeg``, ``image/webp``, ``image/gif``, ``application/pdf`` or a text type;
    ``None``: from the file's bytes or name."""


class Dependency(BaseModel):
    """A dependency written out: ``{task: classify, per_item: true}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    task: str
    """The id of the task depended on."""
    per_item: bool = False
    """Between two tasks mapped over the same items (``for_each``): each instance waits only for the instance of
    ``task`` of the same item (and reads it as ``tasks.<task>``), not for all of them."""


class StepResources(BaseModel):
    """What a code step run on Ray asks the cluster for (``resources:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    num_cpus: float = Field(default=1, ge=0)
    """CPU cores the step holds while it runs (Ray's ``num_cpus``)."""
    memory_gb: float | None = Field(default=None, gt=0)
    """Memory the step holds, in GiB (Ray's ``memory``); ``None``: none reserved."""


class AgentTask(BaseModel):
    """One unit of work: a prompt for an agent (or a Python function: a code step), run once its dependencies
    have ended as its trigger rule needs (by default: all succeeded)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str = Field(pattern=TASK_ID_PATTERN)
    description: str = ""
    """The prompt: a template over ``inputs`` and ``tasks.<ancestor>.output`` (and ``item``, ``index`` in a mapped
    task; required for a model task; a python task's is free text, not rendered)."""
    agent: str | None = None
    """The agent's name; ``None`` uses the project's default agent (for a python task: the built-in ``python``
    agent, or a ``type: python`` agent named here for its limits)."""
    depends_on: list[str | Dependency] = []
    """Task ids, or ``{task: id, per_item: true}`` between two mapped tasks over the same items."""
    for_each: str | list[Any] | None = None
    """Fan out over data: the task becomes one instance per item (``id[key]``), each rendered with ``item`` and
    ``index``. A list, or a template that is one lookup: ``{{ inputs.<key> }}`` (a list, or the path of a
    ``.jsonl``, ``.json`` (an array) or ``.csv`` file, relative to the project file) or ``{{ tasks.<id>.parsed
    }}`` (an upstream json task's array, at a path: ``{{ tasks.plan.parsed.sections }}``)."""
    key: str | None = None
    """With ``for_each``: a template over ``item`` and ``index`` (and ``inputs``) giving each instance a stable
    key, unique among the items: its id is ``<id>[<key>]``; ``None``: the item's index."""
    system_prompt: str | None = None
    """Optional system prompt, also a template."""
    attachments: list[Annotated[str, Field(min_length=1)] | AttachmentSource] = []
    """Files sent with the prompt, before its text: paths (relative to the project file's folder, and refused
    outside it), ``http(s)`` URLs the provider fetches, or templates that give either. Images (PNG, JPEG, WebP,
    GIF) and PDFs go as the provider's own parts; text files are inlined into the prompt."""
    options: GenerationOptions = GenerationOptions.model_construct()
    """Generation-option overrides over the agent's defaults."""
    output_format: OutputFormat = OutputFormat.TEXT
    output_schema: dict[str, Any] | None = None
    """JSON Schema the output must match (with ``output_format: json``)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Limit on the whole task, retries included."""
    retries: int | None = Field(default=None, ge=0)
    """Retries after the first attempt; ``None`` uses the agent's or the project's default."""
    on_truncated: TruncationPolicy | None = None
    """A non-empty answer cut off by ``max_tokens``: ``accept`` it (recorded with ``finish_reason: length``) or
    ``fail`` the task (``output_truncated``); ``None``: accept for text tasks, fail for json tasks. An empty
    answer cut off always fails."""
    review: ReviewSetting = None
    """A review gate on the request or the answer (see :mod:`orchestration.review`); ``None``: the project's
    ``defaults.review``."""
    cache: CacheSetting | None = None
    """The answer cache for this task; ``None``: its agent's ``cache``, else the project's ``defaults.cache``."""
    type: TaskType | None = None
    """``llm`` (a model task) or ``python`` (a code step: see ``call``); ``None``: ``python`` when ``call`` is set,
    else ``llm``."""
    call: str | SkipJsonSchema[StepFunction] | None = None
    """A code step's function: ``"package.module:function"`` (imported from an importable module; the project
    file's folder is on the import path), or in Python the function itself. Sync functions run in a worker
    thread."""
    params: dict[str, Any] = {}
    """A code step's own parameters, given to its function as ``context.params``."""
    remote: bool | None = None
    """A code step in a run on Ray (``--ray``, ``defaults.executor: ray``): ``true`` or ``None`` runs it as a Ray task,
    ``false`` keeps it in the orchestrator's process. Without Ray every step runs in-process."""
    resources: StepResources | None = None
    """What a code step run on Ray holds while it runs (``num_cpus``, ``memory_gb``); ``None``: one CPU."""
    when: str | bool | None = None
    """A condition: a template expression over ``inputs`` and ``tasks`` (e.g. ``"{{ tasks.triage.parsed.urgent
    }}"``), read when the dependencies allow the task to run; false: the task is skipped (``condition_false``)."""
    trigger: TriggerRule = TriggerRule.ALL_SUCCESS
    """When the task runs, given how its dependencies ended."""
    output_file: str | None = None
    """Write the output to this file once the task succeeded: a path template, relative to the project file's
    folder (never outside it unless ``--allow-outside``)."""
    metadata: dict[str, Any] = {}
    """Anything of yours; copied into the task's result."""
    batch: bool | None = None
    """Send this task's request through its agent's batch API (``true``) or in real time (``false``); ``None``: as
    its agent says (``batch: true`` on the agent)."""

    @property
    def is_step(self) -> bool:
        """Whether this is a code step (``type: python``, or ``call`` without a ``type``)."""
        return self.type is TaskType.PYTHON or (self.type is None and self.call is not None)

    @property
    def dependency_ids(self) -> list[str]:
        """The ids in ``depends_on``, whole or per item."""
        return [dep if isinstance(dep, str) else dep.task for dep in self.depends_on]

    @property
    def fails_when_truncated(self) -> bool:
        """Whether a non-empty answer cut off by ``max_tokens`` fails this task (see :attr:`on_truncated`)."""
        if self.on_truncated is None:
            return self.output_format is OutputFormat.JSON
        return self.on_truncated is TruncationPolicy.FAIL


class ErrorInfo(BaseModel):
    """Why a task did not succeed: a stable snake_case ``type`` and a message."""

    model_config = ConfigDict(defer_build=True)

    type: str
    message: str


class AttemptRecord(BaseModel):
    """One try of a task: which agent was called, how it ended, how long it took."""

    model_config = ConfigDict(defer_build=True)

    agent: str
    error_type: str | None = None
    """The error's ``type`` name; ``None`` for the attempt that answered."""
    duration_s: float


CacheSetting = bool | Literal["read", "refresh"]
"""The answer cache for a task: ``true`` use and keep answers, ``false`` neither, ``read`` use but do not keep,
``refresh`` call the model and keep its answer in place of a kept one."""


class CacheInfo(BaseModel):
    """How the answer cache served a task (the result's ``cache``)."""

    model_config = ConfigDict(defer_build=True)

    hit: bool
    """Whether the answer came from the cache (no model was called)."""
    key: str
    """The request's key: sha256 of everything that can change the answer."""
    from_run: str | None = None
    """A hit: the run whose call made the answer."""
    saved_usd: float | None = None
    """A hit: what the call cost when it was made."""
    usage: Usage | None = None
    """A hit: the token usage of the call that made the answer."""


class ReviewerVerdict(BaseModel):
    """What a task's reviewer agent said of a gate's payload before a human saw it."""

    model_config = ConfigDict(defer_build=True)

    agent: str
    verdict: str
    """``approve`` (the gate is approved with actor ``reviewer:<agent>``) or ``escalate`` (a human decides)."""
    reason: str
    cost_usd: float | None = None
    usage: Usage | None = None
    attempts: int = 0


class BatchRecord(BaseModel):
    """The batch job a task's answer came from."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: str
    """The job's id at the provider."""
    submitted_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None


class ReviewRecord(BaseModel):
    """How a task's review gate was decided."""

    model_config = ConfigDict(defer_build=True)

    decision: str
    """``approve``, ``edit``, ``reject``, or the timeout's action."""
    actor: str | None = None
    """Who decided (``timeout`` for a timeout)."""
    message: str | None = None
    decided_at: UtcDatetime | None = None
    waited_s: float | None = None
    """From the gate's opening to its decision (across sessions of the run)."""
    edited: bool = False
    original_output: str | None = None
    """The answer before an edit replaced it (with ``edited`` only)."""
    reviewer: ReviewerVerdict | None = None
    """The reviewer agent's verdict, when the task's review has one (its cost is in the task's ``cost_usd``)."""


class ExecutionResult(BaseModel):
    """The final record of one task. Field names are a stable contract: add, never rename."""

    model_config = ConfigDict(defer_build=True)

    task_id: str
    status: ExecutionStatus
    output: str | None = None
    """The answer; for json tasks the JSON text."""
    error: ErrorInfo | None = None
    agent: str | None = None
    """The agent that answered (or last tried)."""
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    """Model calls made for this task, each one request."""
    attempt_log: list[AttemptRecord] = []
    """Every try in order, fallbacks included; a try refused by an open circuit sent no request."""
    started_at: UtcDatetime | None = None
    """When the task took its concurrency slot."""
    completed_at: UtcDatetime | None = None
    duration_s: float | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    time_to_first_token_s: float | None = None
    finish_reason: str | None = None
    """Why the answer ended, as the provider said (normalised: ``stop``, ``length``, ``content_filter``...)."""
    metadata: dict[str, Any] = {}
    """The task's ``metadata``."""
    review: ReviewRecord | None = None
    """The decision of the task's review gate, if it had one."""
    json_repair: str | None = None
    """Json tasks: why the first answer was refused, when a repair call gave the output."""
    items: list[str] | None = None
    """A mapped task's own result (``for_each``): the ids of its instances (``<id>[<key>]``), in item order; each
    has a result of its own. ``None`` for every other result."""
    cache: CacheInfo | None = None
    """The answer cache's part: a hit (``cost_usd`` 0, no usage; the call's usage is here), or the key a model's
    answer was kept under."""
    output_path: str | None = None
    batch: BatchRecord | None = None
    """The batch job that answered (``cost_usd`` is then at batch prices); ``None``: answered in real time."""
    """The file the output was written to (the task's ``output_file``), absolute."""
    request: list[Message] | None = Field(default=None, exclude=True)
    """The messages as sent (rendered prompts; not serialized: the run store keeps them, redacted)."""
    parsed: Any = Field(default=None, exclude=True)
    """For json tasks the parsed value (not serialized: ``output`` holds its text)."""

    @property
    def succeeded(self) -> bool:
        return self.status is ExecutionStatus.SUCCESS

    @property
    def branch_skipped(self) -> bool:
        """Whether the task was skipped by a false condition (its own or an ancestor's) with nothing failed
        upstream: a branch not taken, which does not fail the run."""
        return (
            self.status is ExecutionStatus.SKIPPED
            and self.error is not None
            and self.error.type in (ErrorType.CONDITION_FALSE, ErrorType.UPSTREAM_SKIPPED)
        )


class ProjectBudget(BudgetLimits):
    """The run's spending caps (``defaults.budget``)."""

    warn_at: float = Field(default=0.8, gt=0, le=1)
    """The share of a cap whose crossing is announced (an event and a progress line), once."""


class MappedResult(ExecutionResult):
    """A mapped task's own result (``for_each``) as downstream templates read it: ``outputs``, ``parsed`` and
    ``results`` are lists in item order (not serialized: each instance has a result of its own; ``items`` names
    them). Its ``output`` is ``None``."""

    outputs: list[str | None] = Field(default=[], exclude=True, repr=False)
    """Each instance's output."""
    parsed: Any = Field(default=None, exclude=True, repr=False)
    """Each instance's parsed value (json tasks)."""
    results: list[ExecutionResult] = Field(default=[], exclude=True, repr=False)
    """Each instance's result (``status``, ``error``, ``output``...); not in the repr (100,000 results would be)."""


class BatchFallback(StrEnum):
    """What a group too small for a batch, or a request a job did not finish, does."""

    REALTIME = "realtime"
    """Goes in real time."""
    WAIT = "wait"
    """Waits for the next batch (a small group waits up to ``max_wait_s`` for more requests)."""


class BatchDefaults(BaseModel):
    """How ready requests of batch agents are grouped into jobs (``defaults.batch``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    max_wait_s: float = Field(default=86400.0, gt=0)
    """How long a request may wait in all (collected, then in a job) before the job is cancelled and the request
    goes to the fallback."""
    min_size: int = Field(default=1, ge=1)
    """A group smaller than this after its window goes to the fallback instead of a job."""
    max_size: int = Field(default=10000, ge=1, le=50000)
    """A group is submitted as soon as it has this many requests (providers take 50,000 at most; Anthropic
    100,000)."""
    window_s: float = Field(default=30.0, ge=0)
    """How long ready requests are collected, from the first one, before they are submitted."""
    fallback: BatchFallback = BatchFallback.REALTIME
    poll_s: float | None = Field(default=None, gt=0)
    """How often a job's status is read at first (backing off from there); ``None``: the provider's cadence."""

    @model_validator(mode="after")
    def _sizes_in_order(self) -> BatchDefaults:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        return self


class ProjectDefaults(BaseModel):
    """Project-wide defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    agent: str | None = None
    """Agent of tasks that name none (``offline`` when unset)."""
    max_concurrency: int = Field(default=16, gt=0)
    """Tasks running at once."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Default per-task timeout."""
    retries: int = Field(default=3, ge=0)
    """Default retries after the first attempt."""
    fail_fast: bool = False
    """Cancel everything running once a task fails."""
    review: ReviewSetting = None
    """Review gate of tasks that set none; ``None``: ``auto`` (no gate)."""
    cache: CacheSetting = True
    """The answer cache of tasks (and agents) that set none."""
    budget: ProjectBudget | None = None
    """Caps on what the run spends (``--budget-usd`` replaces ``max_cost_usd``); ``None``: no cap."""
    batch: BatchDefaults = BatchDefaults.model_construct()
    """How the requests of batch agents are grouped into jobs."""
    executor: Executor = Executor.LOCAL
    """Where the work runs: ``local`` (this process) or ``ray`` (a Ray cluster: code steps as Ray tasks, local models
    as Ray actors; ``--ray`` asks for it too)."""


class ProjectSpec(BaseModel):
    """A project task file: YAML, TOML or JSON with this schema."""

    model_config = ConfigDict(extra="forbid", title="orchestrate project", defer_build=True)

    name: str = "project"
    description: str | None = None
    inputs: dict[str, Any] = {}
    """Values templates read as ``inputs.<key>``; the CLI's ``--input`` overrides them."""
    agents: dict[str, dict[str, Any]] = {}
    """Agents of this project: name -> settings (``type``, ``model``, ...)."""
    defaults: ProjectDefaults = ProjectDefaults.model_construct()
    tasks: list[AgentTask] = []
