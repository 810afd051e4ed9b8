"""One local Ray cluster (2 CPUs, on 127.0.0.1) for every Ray test of the session, stopped at its end.

Tests in this folder run on it: in this process (``ray.init`` was called, so a run uses the connection as it is) or
in subprocesses (``--ray-address`` with the cluster's address). ``RAY_TMPDIR`` is a short folder of its own (Ray's
socket paths must stay under 107 bytes); usage stats are off.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Read by Ray when it is imported: a local cluster on loopback only, sockets under a short folder, no usage stats.
FOLDER = tempfile.mkdtemp(prefix="ray", dir="/tmp")
atexit.register(shutil.rmtree, FOLDER, True)  # also when no test here runs
SETTINGS = {"RAY_TMPDIR": FOLDER, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(SETTINGS)

ray = pytest.importorskip("ray", reason='the Ray tests need the ray extra: pip install "orchestrate-llm[ray]"')


@dataclass(frozen=True)
class Cluster:
    address: str
    """The cluster's GCS address (``host:port``): what ``--ray-address`` takes."""
    env: dict[str, str]
    """The environment of a subprocess that uses it."""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=FOLDER,
    )
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address
        yield Cluster(address, {**os.environ, **SETTINGS})
    finally:
        ray.shutdown()
