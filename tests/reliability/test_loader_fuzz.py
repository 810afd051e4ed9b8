"""Fuzz the task-file loader: any bytes, any YAML/JSON/TOML structure -> a project or a clean validation error."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_registry import (
    MAX_FILE_BYTES,
    MAX_YAML_DEPTH,
    AgentConfig,
    AgentRegistry,
    FileFormatError,
    read_structured_file,
)
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


def read_yaml_both_ways(text: str) -> tuple[Any, Any]:
    """(our reader's data or error, PyYAML's safe loader's data or error) for ``text``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            ours: Any = read_structured_file(path).data
        except FileFormatError:
            ours = FileFormatError
    try:
        theirs: Any = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        theirs = FileFormatError
    return ours, theirs


@SETTINGS
@given(
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
    | values.map(lambda value: yaml.safe_dump({"k": value, "again": value}))  # "again": an alias of "k"'s value
)
def test_yaml_reads_as_pyyamls_safe_loader_does(text: str) -> None:
    ours, theirs = read_yaml_both_ways(text)
    assert repr(ours) == repr(theirs)  # repr: nan equals itself


def test_yaml_anchors_merge_keys_and_tags_read_as_pyyaml_does() -> None:
    text = (
        "base: &base {temperature: 0.2, stop: [x]}\n"
        "merged: {<<: *base, seed: 1}\n"
        "again: *base\n"
        "when: 2024-05-01\n"
        "set: !!set {a, b}\n"
        "flags: [yes, No, on, ~, 0x1f, 1_000, .inf, '7']\n"
    )
    ours, theirs = read_yaml_both_ways(text)
    assert ours == theirs
    assert ours["again"] is ours["base"]  # an alias shares its anchor's value, as in PyYAML


def billion_laughs(levels: int) -> str:
    """Inputs of ``levels`` lists, each of ten aliases of the one before: 10**levels strings in all."""
    lines = ["inputs:", '  lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join([*lines, "tasks: [{id: a, description: x}]", ""])


def validate(path: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from orchestration.cli.app import app

    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs(9))  # 10**9 strings once its aliases are expanded
    code, output = validate(path)
    assert code == 2
    assert f"{path}: YAML aliases expand this file to more than 1,000,000 nodes" in output
    assert "Traceback" not in output


def test_aliases_within_the_limit_are_read(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    path.write_text(billion_laughs(5))  # 111,110 strings and lists: under the limit
    code, output = validate(path)
    assert code == 0, output


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    code, output = validate(path)
    assert code == 2
    assert f"{path}: file is larger than 64 MiB, the most that is read" in output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tasks: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1) + "\n",
            "nested more than 200 levels deep",
        ),
        ("inputs: &me {again: *me}\ntasks: []\n", "invalid YAML: alias 'me' is used inside the node it names"),
        ("inputs: {x: *nowhere}\n", "invalid YAML: found undefined alias 'nowhere'"),
        ("inputs: {[a, b]: c}\n", "invalid YAML: a mapping key must be a scalar"),
    ],
)
def test_yaml_that_cannot_be_data_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, output = validate(path)
    assert code == 2
    assert f"{path}:1: {message}" in output


def lines_by_composing(node: Any, prefix: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    """The line of every key and list item, from PyYAML's node graph (what messages must say)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                out[(*prefix, key_node.value)] = key_node.start_mark.line + 1
                lines_by_composing(value_node, (*prefix, key_node.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*prefix, index)] = item.start_mark.line + 1
            lines_by_composing(item, (*prefix, index), out)


@SETTINGS
@given(data=projects, flow=st.booleans())
def test_every_key_and_item_has_its_line(data: dict[str, Any], flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, width=40)
    expected: dict[tuple[str | int, ...], int] = {}
    lines_by_composing(yaml.compose(text, Loader=yaml.SafeLoader), (), expected)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "project.yaml"
        path.write_text(text, encoding="utf-8")
        source = read_structured_file(path)
        for location, line in expected.items():
            assert source.line_of(location) == line
            assert source.line_of((*location, "not-there")) == line  # the closest parent's line
