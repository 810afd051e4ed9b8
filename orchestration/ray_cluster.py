"""``RayCluster``: the Ray cluster a run uses (``--ray``, ``defaults.executor: ray``, ``executor="ray"``).

Ray runs the work; the orchestrator stays the only scheduler and the only writer of the run store. A run connects
to the cluster ``address`` names (``auto``: the one ``ray start`` runs on this machine; ``ray://host:10001``: a
remote one through Ray Client) or, with no address, starts a local cluster on 127.0.0.1 for the run and stops it
at the end. A process that is connected already (``ray.init`` called before the run) keeps its connection.

Only a run that uses Ray imports it (the ``ray`` extra); nothing else in the package does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import anyio

__all__ = ["LOCAL_SETTINGS", "RAY_INSTALL", "RayCluster", "RayUnavailableError", "import_ray"]

RAY_INSTALL = 'pip install "orchestrate-llm[ray]"'


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


LOCAL_SETTINGS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
"""Environment a local cluster is started with (unless set otherwise): on loopback only (Ray reads it when imported),
no usage stats sent."""


def import_ray(*, local: bool = False) -> ModuleType:
    """The ``ray`` module; raise :class:`RayUnavailableError` with the install command when it is missing.

    ``local``: a cluster will be started here: keep it on 127.0.0.1 (:data:`LOCAL_SETTINGS`, if Ray was not imported
    yet)."""
    if local and "ray" not in sys.modules:
        for key, value in LOCAL_SETTINGS.items():
            os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"running on Ray needs the ray package: {RAY_INSTALL}") from None
    return ray


@dataclass
class RayCluster:
    """A connection to a Ray cluster for one run: ``async with RayCluster(address):``."""

    address: str | None = None
    """``auto``, ``ray://host:port``, a GCS address; ``None``: start a local cluster for the run."""
    num_cpus: int | None = None
    """CPUs of a local cluster started for the run (``None``: the machine's)."""
    owned: bool = field(default=False, init=False)
    """Whether this run connected (or started the cluster), so it disconnects (and stops it) at the end."""

    def _connect(self) -> None:
        ray = import_ray(local=self.address is None)
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"address": self.address, "log_to_driver": False, "configure_logging": False}
        if self.address is None:  # a cluster of our own (never one found running): reachable from this machine only
            options |= {
                "address": "local",
                "num_cpus": self.num_cpus,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
            }
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local cluster"
            raise RayUnavailableError(f"cannot connect to Ray ({where}): {exc}") from None
        self.owned = True

    def _disconnect(self) -> None:
        if self.owned:
            self.owned = False
            import_ray().shutdown()

    async def __aenter__(self) -> RayCluster:
        await anyio.to_thread.run_sync(self._connect)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._disconnect)
