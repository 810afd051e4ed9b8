"""``orchestrate cache stats`` and ``orchestrate cache clear``: the run store's answer cache."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestration.cli.common import StoreOpt, open_store, store_path

__all__ = ["cache_app"]

cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The answer cache of the run store.")


@cache_app.command("stats")
def cache_stats(store: StoreOpt = None) -> None:
    """Kept answers, their size, how often they were served and what that saved."""
    run_store = open_store(store_path(store))
    stats = run_store.cache_stats()
    typer.echo(
        f"{stats.entries} answers ({stats.bytes / 1024:.1f} KiB), {stats.hits} hits, "
        f"${stats.saved_usd:.4f} saved, in {run_store.path}"
    )


@cache_app.command("clear")
def cache_clear(
    older_than: Annotated[
        float | None, typer.Option("--older-than", min=0, help="Only answers kept more than DAYS days ago.")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only the answers of this agent.")] = None,
    store: StoreOpt = None,
) -> None:
    """Delete kept answers (all of them, or those the options name): their tasks call their models again."""
    from datetime import timedelta

    from orchestration.models import utc_now

    run_store = open_store(store_path(store))
    before = utc_now() - timedelta(days=older_than) if older_than is not None else None
    deleted = run_store.clear_cache(before=before, agent=agent)
    typer.echo(f"deleted {deleted} answer{'' if deleted == 1 else 's'} from {run_store.path}", err=True)
