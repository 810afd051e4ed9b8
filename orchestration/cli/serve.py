"""``orchestrate serve``: the HTTP API and page over a run store (the ``serve`` extra; imported only when it runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import StoreOpt

if TYPE_CHECKING:
    import socket

__all__ = ["TOKEN_ENV", "serve"]

TOKEN_ENV = "ORCHESTRATE_TOKEN"
"""Where ``orchestrate serve`` reads its token when ``--token`` is not given."""

_INSTALL = "orchestrate serve needs the serve extra: pip install 'orchestrate-llm[serve]'"


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; any but loopback needs an explicit token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")] = 8700,
    store: StoreOpt = None,
    projects: Annotated[
        Path | None,
        typer.Option("--projects", help="Folder of task files that runs may be started from (by relative path)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help=f"The API's bearer token [default: ${TOKEN_ENV}, else a new one, printed]."),
    ] = None,
    cors_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="Let pages from this origin call the API (repeatable) [default: none].",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the runs of a store over HTTP: a page at / and a JSON API at /api (docs/serve-api.md).

    Every run in the store is shown, whichever process runs it; runs started here (posted, or a file under
    --projects) run in this process. Every /api route but /api/health needs `Authorization: Bearer <token>`.
    """
    from orchestration.cli.common import fail_invalid, store_path

    if projects is not None and not projects.is_dir():
        fail_invalid([f"--projects {projects}: not a folder"])
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail_invalid(["--log-level must be debug, info, warning or error"])
    source = "--token" if token else f"${TOKEN_ENV}"
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not _loopback(host):
        fail_invalid(
            [f"--host {host} is reachable from other machines: give a token (--token or ${TOKEN_ENV}) to serve on it"]
        )
    try:
        import uvicorn

        from orchestration.serve import create_app
        from orchestration.serve.auth import new_token
    except ImportError:
        fail_invalid([_INSTALL])
    from orchestration.log import configure_logging

    configure_logging(log_level, "console")  # the engine's own messages (redacted), on stderr as uvicorn's
    listening = _listen(host, port)
    where = f"http://{_url_host(host)}:{listening.getsockname()[1]}/"
    if token is None:
        token = new_token()
        typer.echo(f"orchestrate serve: {where}#token={token}")  # the one place the made token is shown
    else:
        typer.echo(f"orchestrate serve: {where} (the token of {source})")
    app = create_app(
        store_path(store), projects.resolve() if projects else None, token, cors_origins=cors_origins or ()
    )
    config = uvicorn.Config(app, log_level=log_level.lower(), timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[listening])


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; exit 2 when it cannot be had (the port is taken, say)."""
    import socket

    from orchestration.cli.common import fail_invalid

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and a connection accepted here
        # inherits it; without it, a response written in two pieces waits for the client's delayed ACK (~40 ms)
        listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host.strip("[]"), port))
        listening.listen(2048)
    except OSError as exc:
        fail_invalid([f"cannot listen on {host}:{port}: {exc.strerror or exc}"])
    return listening
