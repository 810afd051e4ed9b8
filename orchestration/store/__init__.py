"""The durable run store: SQLite records of runs and task results, resume planning and export.

Crash semantics: a task's success is committed before its dependents start (its
worker moves on to the next task meanwhile), so a killed process loses only the calls
that were in flight and the results of the commit in progress; those run again on
resume (at-least-once for them, never again for a committed success).

Review gates (:mod:`.gates`): a task's request or answer waits for a human decision, kept in the store.

Events (:mod:`.events`): every event of a run, numbered in order, for processes that follow a run they do not run.

One owner per run: a session holds its run's lease while it runs (another is refused with
:class:`RunOwnedError`), and a session whose lease was taken over cannot write (:class:`LeaseLostError`).
"""

from orchestration.store.events import StoredEvent
from orchestration.store.export import ExportFormat, export_run, run_document
from orchestration.store.gates import (
    TIMEOUT_ACTOR,
    Decision,
    DecisionKind,
    Gate,
    GateConflictError,
    GateError,
    GateRequest,
    GateStage,
    StaleGateError,
    TimeoutAction,
    UnknownGateError,
    payload_digest,
)
from orchestration.store.lease import LEASE_ENV, Lease, LeaseLostError, RunOwnedError
from orchestration.store.resume import (
    ResumePlan,
    agent_fingerprint,
    fingerprints,
    plan_resume,
    project_hash,
    task_fingerprint,
)
from orchestration.store.run_store import (
    DEFAULT_STORE_PATH,
    LATEST,
    STORE_ENV,
    RunRecord,
    RunStatus,
    RunStore,
    StoredRun,
    StoredTask,
    UnknownRunError,
    default_store_path,
)

__all__ = [
    "DEFAULT_STORE_PATH",
    "LATEST",
    "LEASE_ENV",
    "STORE_ENV",
    "TIMEOUT_ACTOR",
    "Decision",
    "DecisionKind",
    "ExportFormat",
    "Gate",
    "GateConflictError",
    "GateError",
    "GateRequest",
    "GateStage",
    "Lease",
    "LeaseLostError",
    "ResumePlan",
    "RunOwnedError",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "StaleGateError",
    "StoredEvent",
    "StoredRun",
    "StoredTask",
    "TimeoutAction",
    "UnknownGateError",
    "UnknownRunError",
    "agent_fingerprint",
    "default_store_path",
    "export_run",
    "fingerprints",
    "payload_digest",
    "plan_resume",
    "project_hash",
    "run_document",
    "task_fingerprint",
]
