"""Fuzz the task-file loader: any bytes, any YAML/JSON/TOML structure -> a project or a clean validation error."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_registry import AgentConfig, AgentRegistry
from orchestration.issues import ProjectValidationError
from orchestration.loader import load_project_file
from orchestration.project import compile_project

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "name", "tasks", "agents", "defaults", "inputs", "id", "description", "depends_on", "agent", "type",
    "model", "options", "retries", "timeout_s", "output_format", "output_schema", "fallbacks", "limits",
    "max_concurrency", "temperature", "latency_ms", "system_prompt", "metadata", "retry",
]  # fmt: skip
TEMPLATES = [
    "plain", "{{ inputs.k }}", "{{ tasks.a.output }}", "{{ tasks.zz.output }}", "{% for x in %}", "{{ unknown }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ tasks.b.parsed.x }}", "{#", "}}{{",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(TEMPLATES)
)
keys = st.sampled_from(KEYS) | st.text(min_size=1, max_size=8)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=20
)


def mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``plausible``, sometimes any value at all."""
    return st.one_of(plausible, plausible, plausible, values)


ids = st.sampled_from(["a", "b", "c", "zz", "bad id", ""]) | values
tasks = st.fixed_dictionaries(
    {"id": ids, "description": st.sampled_from(TEMPLATES) | values},
    optional={
        "depends_on": st.lists(ids, max_size=3) | values,
        "agent": st.sampled_from(["offline", "fast", "nope"]) | values,
        "output_format": st.sampled_from(["text", "json", "xml"]) | values,
        "output_schema": values,
        "retries": values,
        "timeout_s": values,
        "options": st.dictionaries(st.sampled_from(["temperature", "max_tokens", "stop", "junk"]), values) | values,
        "system_prompt": st.sampled_from(TEMPLATES) | values,
    },
)
plausible_tasks = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", "c", "d"]),
        "description": st.sampled_from(["do it", "{{ inputs.j }}", *TEMPLATES]),
    },
    optional={
        "depends_on": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2),
        "agent": st.sampled_from(["offline", "fast"]),
        "retries": st.integers(min_value=0, max_value=3),
        "output_format": st.sampled_from(["text", "json"]),
    },
)
agents = st.dictionaries(
    st.sampled_from(["fast", "other"]) | st.text(max_size=5),
    st.fixed_dictionaries(
        {"type": mostly(st.sampled_from(["offline", "offline", "telepathy"]))},
        optional={"latency_ms": values, "fallbacks": mostly(st.lists(st.sampled_from(["offline", "fast", "x"])))},
    ),
    max_size=3,
)


plausible_projects: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "name": st.text(max_size=10),
        "tasks": st.lists(plausible_tasks, max_size=5, unique_by=lambda task: str(task["id"])),
        "inputs": st.fixed_dictionaries({"k": scalars, "j": scalars}),
    },
    optional={"agents": st.just({"fast": {"type": "offline", "fallbacks": ["offline"]}})},
)
noisy_projects = st.fixed_dictionaries(
    {},
    optional={
        "name": mostly(st.text(max_size=10)),
        "tasks": mostly(st.lists(mostly(plausible_tasks | tasks), max_size=5)),
        "agents": mostly(agents),
        "defaults": mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "agent": mostly(st.sampled_from(["offline", "fast", "nope"])),
                    "max_concurrency": mostly(st.integers(min_value=1, max_value=8)),
                    "retries": mostly(st.integers(min_value=0, max_value=3)),
                },
            )
        ),
        "inputs": mostly(st.dictionaries(st.sampled_from(["k", "j"]), scalars)),
        "junk": values,
    },
)
projects = plausible_projects | noisy_projects


def toml_value(value: Any) -> str | None:
    """A tiny TOML emitter for fuzz data (``None`` where TOML cannot say it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not (isinstance(value, float) and math.isinf(value)) else None
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        items = [v for v in (toml_value(item) for item in value) if v is not None]
        return "[" + ", ".join(items) + "]"
    pairs = [(json.dumps(str(k)), toml_value(v)) for k, v in value.items()]
    return "{" + ", ".join(f"{k} = {v}" for k, v in pairs if v is not None) + "}"


def dump(data: dict[str, Any], suffix: str) -> str:
    if suffix == ".json":
        return json.dumps(data)
    if suffix == ".yaml":
        return yaml.safe_dump(data, allow_unicode=True)
    pairs = [(json.dumps(key), toml_value(value)) for key, value in data.items()]
    return "".join(f"{key} = {value}\n" for key, value in pairs if value is not None)


def load_and_compile(path: Path) -> None:
    """Loading and compiling either works or raises ``ProjectValidationError``; nothing else escapes."""
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    try:
        spec, source = load_project_file(path)
        project = compile_project(spec, registry, source=source)
    except ProjectValidationError as exc:
        assert exc.issues and all(str(issue) for issue in exc.issues)
        return
    assert len(project.tasks) == len(spec.tasks)


@SETTINGS
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".yaml", ".json", ".toml", ".yml", ".txt"]))
def test_any_bytes_give_a_project_or_a_validation_error(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"project{suffix}"
        path.write_bytes(content)
        load_and_compile(path)


@SETTINGS
@given(data=projects, suffix=st.sampled_from([".yaml", ".json", ".toml"]))
def test_any_structure_gives_a_project_or_a_validation_error(data: dict[str, Any], suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"project{suffix}"
        path.write_text(dump(data, suffix), encoding="utf-8")
        load_and_compile(path)


@SETTINGS
@given(text=st.text(max_size=300), suffix=st.sampled_from([".yaml", ".json", ".toml"]))
def test_any_text_gives_a_project_or_a_validation_error(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"project{suffix}"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        load_and_compile(path)
