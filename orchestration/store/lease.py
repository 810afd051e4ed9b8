"""One owner per run: the lease a session of a run holds in the store, its heartbeat and its fencing token.

A session takes its run's lease when it opens the run (:meth:`~orchestration.store.RunStore.begin_run`),
in one ``BEGIN IMMEDIATE`` transaction: while another owner's lease is unexpired the session is refused
(:class:`RunOwnedError`); an expired lease (its owner stopped renewing it: it died or hung) is taken over.
Each take raises the run's fencing token by one. A heartbeat (:meth:`~orchestration.store.RunStore.heartbeat`)
renews the lease while the run goes; the run's end releases it.

Fencing: every write of a session (its results, its heartbeats, the run's end) is checked in the transaction
of its group commit: when the run's token is no longer the session's, the whole group is rolled back and the
session stops with :class:`LeaseLostError` instead of writing over its successor's results. The check is one
read per commit, not per result. Each result row keeps the token of the session that wrote it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from orchestration.models import utc_now

__all__ = [
    "DEFAULT_LEASE_S",
    "HEARTBEATS_PER_LEASE",
    "LEASE_ENV",
    "Lease",
    "LeaseLostError",
    "RunOwnedError",
    "default_lease_s",
    "this_host",
]

LEASE_ENV = "ORCHESTRATE_LEASE_S"
DEFAULT_LEASE_S = 10.0
"""How long a lease lasts without a heartbeat: how soon a run whose owner died can be resumed."""
HEARTBEATS_PER_LEASE = 5
"""Heartbeats per lease period (every 2 s for 10 s): a few may be late before the lease lapses."""


def default_lease_s(env: Mapping[str, str] | None = None) -> float:
    """``$ORCHESTRATE_LEASE_S``, else :data:`DEFAULT_LEASE_S`; ``ValueError`` unless a number of seconds > 0."""
    env = os.environ if env is None else env
    value = env.get(LEASE_ENV)
    if not value:
        return DEFAULT_LEASE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 1e9:  # NaN and infinity too
        raise ValueError(f"{LEASE_ENV} must be a number of seconds above 0, not {value!r}")
    return seconds


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Lease:
    """Who holds a run (or held it last, when the lease expired): one session of one process."""

    run_id: str
    owner: str
    """Random per session."""
    pid: int
    host: str
    token: int
    """The fencing token: raised by one each time the lease is taken."""
    heartbeat_at: datetime
    """When it was taken or last renewed."""
    expires_at: datetime | None
    """``None`` once released: the run's session ended."""

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the lease is free to take: released, or not renewed in time (its owner died or hangs)."""
        return self.expires_at is None or self.expires_at <= (now or utc_now())


class RunOwnedError(RuntimeError):
    """Another session holds the run's lease: it is running (or was, and its lease has not expired yet)."""

    def __init__(self, lease: Lease) -> None:
        assert lease.expires_at is not None
        self.lease = lease
        self.expires_at = lease.expires_at
        left = max(0.0, (lease.expires_at - utc_now()).total_seconds())
        super().__init__(
            f"run '{lease.run_id}' is being run by pid {lease.pid} on host {lease.host}: its lease expires at"
            f" {lease.expires_at:%Y-%m-%d %H:%M:%S} UTC (in {left:.1f} s) unless that process renews it;"
            " resume it once that process has ended"
        )

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    @property
    def pid(self) -> int:
        return self.lease.pid

    @property
    def host(self) -> str:
        return self.lease.host


class LeaseLostError(RuntimeError):
    """This session's lease was taken over (its heartbeat stopped for longer than the lease): its writes are
    refused from then on, and its run stops. What it committed before stays."""

    def __init__(self, run_id: str, token: int, successor: Lease | None) -> None:
        self.run_id = run_id
        self.token = token
        self.successor = successor
        by = f" by pid {successor.pid} on host {successor.host}" if successor is not None else ""
        super().__init__(
            f"run '{run_id}': this session (pid {os.getpid()}, lease {token}) lost the run's lease: it was taken"
            f" over{by}; this session stopped, and its later results were not written"
        )
