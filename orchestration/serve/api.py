"""The routes of ``orchestrate serve`` under ``/api`` (docs/serve-api.md). Reads and review decisions are plain
functions (FastAPI runs them in worker threads: SQLite blocks); starting, cancelling and resuming runs and the event
streams run on the event loop."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sse_starlette import EventSourceResponse

from orchestration.results import RunStatus
from orchestration.serve import sse, views
from orchestration.serve.details import RunDetails
from orchestration.serve.feeds import RunFeeds
from orchestration.serve.projects import list_projects
from orchestration.serve.runs import RunManager
from orchestration.store import Decision, DecisionKind, GateError, GateStage

__all__ = ["ReviewRequest", "StartRequest", "api_router"]


class StartRequest(BaseModel):
    """``POST /api/runs``: a project (a task file's content as JSON) or the path of a task file under ``--projects``."""

    model_config = ConfigDict(extra="forbid")

    project: dict[str, Any] | None = None
    path: str | None = None
    inputs: dict[str, Any] = {}
    """Values of the project's inputs (over its defaults)."""
    run_id: str | None = None
    """The new run's id [default: time + random]."""
    max_concurrency: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_project(self) -> StartRequest:
        if (self.project is None) == (self.path is None):
            raise ValueError("give either 'project' (the task file as JSON) or 'path' (a file under --projects)")
        return self


class ReviewRequest(BaseModel):
    """``POST /api/runs/{run_id}/tasks/{task_id}/review``: a decision on the task's current review gate."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "edit"]
    message: str | None = None
    """Why; required by reject."""
    actor: str = "web"
    """Who decides."""
    output: str | None = None
    """edit of an ``after`` gate: the new answer."""
    prompt: str | None = None
    """edit of a ``before`` gate: the new prompt."""
    system_prompt: str | None = None
    """edit of a ``before`` gate: the new system prompt."""
    options: dict[str, Any] | None = None
    """edit of a ``before`` gate: the new generation options."""
    decision_id: str | None = None
    """Names the decision: sending it again records nothing and answers the gate as decided."""
    digest: str | None = None
    """The payload digest reviewed: refused (409) if the gate now shows another."""
    stage: Literal["before", "after"] | None = None
    """The gate of this stage only."""


def api_router(
    manager: RunManager, *, version: str, poll_s: float = sse.POLL_S, ping_s: float = sse.PING_S
) -> APIRouter:
    """Every ``/api`` route; the server's token guards all but ``/api/health`` (:class:`~.auth.TokenAuth`)."""
    router = APIRouter(prefix="/api")
    store = manager.store
    feeds = RunFeeds(store, poll_s)
    details = RunDetails(store)
    followed = views.FollowedRuns()

    @router.get("/health")
    def health() -> dict[str, str]:
        """Whether the server answers (no token needed)."""
        return {"status": "ok", "version": version}

    @router.get("/docs", include_in_schema=False)
    @router.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> dict[str, Any]:
        """The API's OpenAPI document (JSON, behind the token like the rest: no page a browser could open)."""
        schema: dict[str, Any] = request.app.openapi()
        return schema

    @router.get("/projects")
    def projects() -> dict[str, Any]:
        """The task files under ``--projects``."""
        return {"projects": [asdict(project) for project in list_projects(manager.projects)]}

    @router.get("/runs")
    def runs(
        project: str | None = None, status: RunStatus | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> dict[str, Any]:
        """The newest runs of the store, whoever runs them."""
        return views.runs_view(store, project=project, status=status, limit=limit, followed=followed)

    @router.get("/runs/{run_id}", response_class=Response, responses={200: {"content": {"application/json": {}}}})
    def run(
        run_id: str,
        if_none_match: Annotated[str | None, Header()] = None,
        accept_encoding: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The RunDetail, with an ETag: sent back in ``If-None-Match``, it gets 304 while nothing of the run
        changed. Gzip-compressed when the client takes it, once per version of a finished run."""
        version, etag = details.version(run_id)
        headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
            return Response(status_code=304, headers=headers)
        if accept_encoding is not None and "gzip" in accept_encoding.lower():
            headers["Content-Encoding"] = "gzip"  # the GZip middleware leaves an encoded answer as it is
            return Response(details.gzipped(run_id, version), media_type="application/json", headers=headers)
        return Response(details.body(run_id, version), media_type="application/json", headers=headers)

    @router.get("/runs/{run_id}/results")
    def results(run_id: str) -> dict[str, Any]:
        """The results document, as ``orchestrate run --results`` writes it."""
        return views.results_view(store, run_id)

    @router.get("/runs/{run_id}/tasks/{task_id}")
    def task(run_id: str, task_id: str) -> dict[str, Any]:
        return views.task_view(store, run_id, task_id)

    @router.post("/runs", status_code=201)
    async def start(request: StartRequest) -> dict[str, str]:
        """Validate a project and start it in this server; answered once the run is in the store."""
        if request.project is not None:
            run_id = await manager.start_posted(
                request.project, inputs=request.inputs, run_id=request.run_id, max_concurrency=request.max_concurrency
            )
        else:
            assert request.path is not None
            run_id = await manager.start_file(
                request.path, inputs=request.inputs, run_id=request.run_id, max_concurrency=request.max_concurrency
            )
        return {"run_id": run_id}

    @router.post("/runs/{run_id}/cancel", status_code=202)
    async def cancel(run_id: str) -> dict[str, str]:
        """Cancel a run this server runs; answered once it stopped (or after 10 s), with its status."""
        status = await manager.cancel(run_id)
        return {"run_id": run_id, "status": str(status)}

    @router.post("/runs/{run_id}/resume", status_code=202)
    async def resume(run_id: str) -> dict[str, str]:
        """Resume a stopped run in this server: only the tasks that did not succeed run again."""
        return {"run_id": await manager.resume(run_id)}

    @router.get("/reviews")
    def reviews(run_id: str | None = None) -> dict[str, Any]:
        """The open review gates (of one run, or all); gates whose time is up are decided by their timeout first."""
        if run_id is not None:
            store.get_run(run_id)
        store.expire_gates()
        return {"reviews": [gate.as_json() for gate in store.open_gates(run_id)]}

    @router.post("/runs/{run_id}/tasks/{task_id}/review")
    def review(run_id: str, task_id: str, request: ReviewRequest) -> dict[str, Any]:
        """Decide the task's current review gate; the first decision wins (the same ``decision_id`` again is a no-op:
        ``recorded`` is then false)."""
        store.get_run(run_id)
        edits = {
            "output": request.output,
            "prompt": request.prompt,
            "system_prompt": request.system_prompt,
            "options": request.options,
        }
        edit = {key: value for key, value in edits.items() if value is not None}
        if edit and request.decision != "edit":
            raise GateError(f"{request.decision}: output, prompt, system_prompt and options are for edit only")
        decision = Decision(
            DecisionKind(request.decision),
            request.actor,
            request.message,
            digest=request.digest,
            edit=edit or None,
            decision_id=request.decision_id or uuid.uuid4().hex,
        )
        earlier = any(gate.decision_id == decision.decision_id for gate in store.gates_of(run_id, task_id))
        stage = GateStage(request.stage) if request.stage is not None else None
        gate = store.decide(run_id, task_id, decision, stage=stage)
        return {"gate": gate.as_json(), "recorded": not earlier}

    @router.get("/runs/{run_id}/events")
    async def run_events(
        run_id: str,
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[int | None, Header(ge=0)] = None,
    ) -> EventSourceResponse:
        """The run's events as SSE, from the first (or after ``Last-Event-ID`` / ``after``); ends after the run
        stopped."""
        await anyio.to_thread.run_sync(store.run_status, run_id)  # 404 for an unknown run
        start = last_event_id if last_event_id is not None else after or 0
        return sse.stream(sse.run_events(feeds.feed(run_id), start), ping_s=ping_s)

    @router.get("/events")
    async def all_events(
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[int | None, Header(ge=0)] = None,
    ) -> EventSourceResponse:
        """Every run's events as SSE (from the first, or after ``Last-Event-ID`` / ``after``); never ends."""
        start = last_event_id if last_event_id is not None else after or 0
        return sse.stream(sse.all_events(store, start, poll_s=poll_s), ping_s=ping_s)

    return router
