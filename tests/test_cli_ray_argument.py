"""``--ray [ADDRESS]``: an address right after ``--ray`` is read as ``--ray-address``; a file is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli.common import ray_address_argument


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "p.yaml", "--ray"], ["run", "p.yaml", "--ray"]),
        (["run", "p.yaml", "--ray", "auto"], ["run", "p.yaml", "--ray-address", "auto"]),
        (["run", "--ray", "ray://head:10001", "p.yaml"], ["run", "--ray-address", "ray://head:10001", "p.yaml"]),
        (["run", "p.yaml", "--ray", "10.0.0.5:6379", "-q"], ["run", "p.yaml", "--ray-address", "10.0.0.5:6379", "-q"]),
        (["run", "p.yaml", "--ray=auto"], ["run", "p.yaml", "--ray-address", "auto"]),
        (["run", "--ray", "p.yaml"], ["run", "--ray", "p.yaml"]),
        (["run", "--ray", "-q", "p.yaml"], ["run", "--ray", "-q", "p.yaml"]),
    ],
)
def test_an_address_after_ray_is_its_address(args: list[str], expected: list[str]) -> None:
    assert ray_address_argument(args) == expected


def test_a_file_named_like_an_address_stays_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "auto").write_text("tasks: []")
    assert ray_address_argument(["run", "--ray", "auto"]) == ["run", "--ray", "auto"]


def test_the_command_line_reads_ray_with_an_address(tmp_path: Path) -> None:
    """Through the real entry point: ``--ray auto`` looks for a running cluster (none here: exit 2, said
    plainly), where Typer alone would refuse ``auto`` as an extra argument."""
    pytest.importorskip("ray")
    file = tmp_path / "p.yaml"
    file.write_text("tasks:\n  - {id: a, description: hi}\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "orchestration",
        "run",
        str(file),
        "--ray",
        "auto",
        "--store",
        str(tmp_path / "r.db"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot connect to Ray (auto)" in done.stdout + done.stderr
