"""The ``orchestrate serve`` application: :func:`create_app` puts the API, the token check, the body limit, CORS
(off unless origins are given), the error answers and the page together."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.serve import sse
from orchestration.serve.api import api_router
from orchestration.serve.auth import TokenAuth
from orchestration.serve.limits import MAX_BODY_BYTES, BodyLimit
from orchestration.serve.runs import RunConflictError, RunManager
from orchestration.serve.views import issue_json
from orchestration.store import (
    GateConflictError,
    GateError,
    RunStore,
    StaleGateError,
    UnknownGateError,
    UnknownRunError,
)

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
"""The page (``index.html`` and its scripts), served at ``/``."""


def create_app(
    store_path: Path,
    projects_dir: Path | None,
    token: str,
    *,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    poll_s: float = sse.POLL_S,
    ping_s: float = sse.PING_S,
) -> FastAPI:
    """The server of the run store at ``store_path``: every run in it (whoever runs it), runs started here (task files
    posted, or named under ``projects_dir``), review decisions; every ``/api`` route but ``/api/health`` needs
    ``Authorization: Bearer <token>``."""
    manager = RunManager(RunStore(store_path), projects_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _ = manager.store.writer  # made here, before worker threads could race to make it
        async with manager.serving():
            yield
        manager.store.close()

    version = _version()
    app = FastAPI(
        title="orchestrate serve",
        version=version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served under /api, behind the token (api_router)
    )
    app.state.runs = manager
    app.include_router(api_router(manager, version=version, poll_s=poll_s, ping_s=ping_s))
    _add_error_answers(app)
    # A large run's detail is megabytes of JSON that compresses tenfold; event streams are never compressed
    # (``text/event-stream`` is among GZipMiddleware's excluded types: a compressor would hold events back).
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=1)  # ~10x smaller at a fifth of level 9's time
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(TokenAuth, token=token)  # outside the body limit: no body is read without the token
    if cors_origins:  # outside the token check: a preflight carries no token
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "If-None-Match"],
            expose_headers=["ETag"],
        )
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


def _add_error_answers(app: FastAPI) -> None:
    """Refusals as JSON: 404 unknown run or gate, 409 conflicts, 422 with the issue list."""

    def detail(status: int, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status)

    def issues(found: Sequence[ValidationIssue]) -> JSONResponse:
        return JSONResponse({"issues": [issue_json(issue) for issue in found]}, status_code=422)

    async def unknown(request: Request, error: Exception) -> JSONResponse:
        return detail(404, error)

    async def conflict(request: Request, error: Exception) -> JSONResponse:
        return detail(409, error)

    async def invalid_project(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ProjectValidationError)
        return issues(error.issues)

    async def invalid_gate(request: Request, error: Exception) -> JSONResponse:
        return issues([ValidationIssue(str(error))])

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        """FastAPI's own checks, as issues (never with the input, which may hold a key)."""
        assert isinstance(error, RequestValidationError)
        return issues([_request_issue(problem) for problem in error.errors()])

    unknowns: tuple[type[Exception], ...] = (UnknownRunError, UnknownGateError, FileNotFoundError)
    conflicts: tuple[type[Exception], ...] = (RunConflictError, StaleGateError, GateConflictError)
    for kind in unknowns:
        app.add_exception_handler(kind, unknown)
    for kind in conflicts:
        app.add_exception_handler(kind, conflict)
    app.add_exception_handler(ProjectValidationError, invalid_project)
    app.add_exception_handler(GateError, invalid_gate)
    app.add_exception_handler(RequestValidationError, invalid_request)


def _request_issue(problem: dict[str, object]) -> ValidationIssue:
    location = problem.get("loc")
    parts = [str(part) for part in location] if isinstance(location, list | tuple) else []
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ValidationIssue(str(problem.get("msg", "invalid request")), field=".".join(parts) or None)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("orchestrate-llm")
    except PackageNotFoundError:
        return "unknown"
