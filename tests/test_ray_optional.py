"""Ray is optional (the ``ray`` extra): asking for it without it installed is a clear error, exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration import ProjectOrchestrator
from orchestration.cli.app import app
from orchestration.ray_cluster import RayUnavailableError, import_ray

INSTALL = 'pip install "orchestrate-llm[ray]"'


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError


def test_import_ray_names_the_extra(no_ray: None) -> None:
    with pytest.raises(RayUnavailableError, match=r"needs the ray package: pip install \"orchestrate-llm\[ray\]\""):
        import_ray()


async def test_a_run_on_ray_without_ray_fails_before_any_task(no_ray: None) -> None:
    run = ProjectOrchestrator(executor="ray")
    run.add_step("never", lambda context: "ran")
    with pytest.raises(RayUnavailableError):
        await run.run()
    assert run.results == {}


def test_the_cli_says_what_to_install_and_exits_2(no_ray: None, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntasks:\n  - {id: a, call: 'os:getcwd'}\n")
    result = CliRunner().invoke(app, ["run", str(path), "--ray", "-q", "--store", str(tmp_path / "runs.db")])
    assert result.exit_code == 2, result.output
    assert INSTALL in result.output
