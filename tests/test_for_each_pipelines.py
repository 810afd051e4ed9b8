"""``for_each`` with the other pipeline fields: ``when`` over ``item``, trigger rules over a mapped dependency and
per item, code steps in a map, an output file and attachments per item, review gates on instances."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from llm_abstractions import FunctionLlm, GenerationOptions, InvalidRequestError, Message
from orchestration import ExecutionStatus, RunEvent, StepContext
from orchestration.models import MappedResult
from orchestration.store import Decision, DecisionKind, Gate, RunStore
from tests.fakes import media
from tests.test_for_each import TICKETS, Model, project


def urgency(prompt: str) -> dict[str, Any]:
    """A json classifier: urgent when the ticket's text says something is down or failing."""
    return {"urgent": "down" in prompt or "failing" in prompt}


CLASSIFY = {
    "id": "classify",
    "for_each": TICKETS,
    "key": "{{ item.id }}",
    "description": "classify {{ item.text }}",
    "output_format": "json",
    "output_schema": {"type": "object", "properties": {"urgent": {"type": "boolean"}}, "required": ["urgent"]},
}


def per_item(task_id: str, **fields: Any) -> dict[str, Any]:
    """A task mapped over the tickets too, depending on ``classify`` per item."""
    return {
        "id": task_id,
        "for_each": TICKETS,
        "key": "{{ item.id }}",
        "depends_on": [{"task": "classify", "per_item": True}],
        **fields,
    }


# -- when --------------------------------------------------------------------------------------------------------


async def test_a_when_over_item_skips_instances_and_the_mapped_task_still_succeeds() -> None:
    results = await project(
        [
            {
                "id": "each",
                "for_each": [{"n": 1}, {"n": 2}, {"n": 3}],
                "when": "{{ item.n != 2 and index < 5 }}",
                "description": "item {{ item.n }}",
            },
            {"id": "after", "depends_on": ["each"], "description": "{{ tasks.each.outputs }}"},
        ]
    ).run()

    skipped = results["each[1]"]
    assert skipped.status is ExecutionStatus.SKIPPED and skipped.error is not None
    assert skipped.error.type == "condition_false" and "item.n != 2" in skipped.error.message
    assert results["each"].status is ExecutionStatus.SUCCESS  # a branch not taken is no failure
    assert results["after"].output == "out:['out:item 1', None, 'out:item 3']"


async def test_a_when_without_item_is_read_once_before_the_items() -> None:
    """False: the mapped task is skipped as a whole (its items are never read), its all_success dependents are
    skipped as a branch not taken, and a none_failed join runs."""
    model = Model(lambda prompt: {"items": [1, 2]} if prompt == "gate" else prompt)
    results = await project(
        [
            {
                "id": "gate",
                "description": "gate",
                "output_format": "json",
                "output_schema": {"type": "object", "properties": {"items": {"type": "array"}}},
            },
            {
                "id": "each",
                "for_each": "{{ tasks.gate.parsed.items }}",
                "depends_on": ["gate"],
                "when": "{{ inputs.go }}",
                "description": "item {{ item }}",
            },
            {"id": "after", "depends_on": ["each"], "description": "{{ tasks.each.outputs }}"},
            {"id": "join", "depends_on": ["each"], "trigger": "none_failed", "description": "joined"},
        ],
        model,
        inputs={"go": False},
    ).run()

    each = results["each"]
    assert isinstance(each, MappedResult) and each.status is ExecutionStatus.SKIPPED
    assert each.error is not None and each.error.type == "condition_false" and each.items is None
    assert results["after"].error is not None and results["after"].error.type == "upstream_skipped"
    assert results["join"].status is ExecutionStatus.SUCCESS
    assert sorted(model.calls) == ["gate", "joined"]


async def test_a_when_that_cannot_be_read_before_the_items_fails_the_mapped_task() -> None:
    results = await project(
        [
            {"id": "each", "for_each": [1, 2], "when": "{{ inputs.missing.key }}", "description": "{{ item }}"},
            {"id": "report", "depends_on": ["each"], "trigger": "all_done", "description": "{{ tasks.each.status }}"},
        ],
        inputs={"missing": {}},
    ).run()

    each = results["each"]
    assert each.status is ExecutionStatus.FAILED and each.error is not None and each.error.type == "template_error"
    assert results["report"].output == "out:failed"


async def test_a_per_item_when_reads_the_instance_of_its_per_item_dependency() -> None:
    """``draft[k]`` runs only for the tickets ``classify[k]`` found urgent; ``reply`` joins after the branch."""
    model = Model(lambda p: urgency(p) if p.startswith("classify") else p)
    results = await project(
        [
            CLASSIFY,
            per_item("draft", when="{{ tasks.classify.parsed.urgent }}", description="draft {{ item.id }}"),
            {
                "id": "reply",
                "depends_on": ["draft"],
                "trigger": "none_failed",
                "description": "{{ tasks.draft.results | map(attribute='status') | join(',') }}",
            },
        ],
        model,
    ).run()

    assert [results[f"draft[{t['id']}]"].status for t in TICKETS] == ["success", "skipped", "success"]
    assert results["draft[b2]"].error is not None and results["draft[b2]"].error.type == "condition_false"
    assert results["draft"].status is ExecutionStatus.SUCCESS
    assert results["reply"].output == "success,skipped,success"
    assert "draft b2" not in model.calls


# -- trigger rules -------------------------------------------------------------------------------------------------


def failing_on(text: str) -> Model:
    def answer(prompt: str) -> str:
        if text in prompt:
            raise InvalidRequestError("refused", provider="function")
        return prompt

    return Model(answer)


async def test_trigger_rules_over_a_mapped_dependency_with_a_failed_instance() -> None:
    results = await project(
        [
            {"id": "each", "for_each": [0, 1, 2], "description": "item {{ item }}"},
            {"id": "ok", "description": "ok"},
            {"id": "strict", "depends_on": ["each"], "description": "strict"},
            {"id": "joined", "depends_on": ["each"], "trigger": "none_failed", "description": "joined"},
            {
                "id": "report",
                "depends_on": ["each"],
                "trigger": "all_done",
                "description": "{{ tasks.each.status }}: {{ tasks.each.results | map(attribute='status') | join }}",
            },
            {"id": "any", "depends_on": ["each", "ok"], "trigger": "one_success", "description": "any"},
        ],
        failing_on("item 1"),
    ).run()

    assert results["each"].status is ExecutionStatus.FAILED
    assert results["strict"].status is ExecutionStatus.SKIPPED and results["joined"].status is ExecutionStatus.SKIPPED
    assert results["report"].output == "failed: successfailedsuccess"
    assert results["any"].status is ExecutionStatus.SUCCESS


async def test_a_mapped_task_s_trigger_rule_applies_to_its_dependencies() -> None:
    """``each`` (all_done) expands after its dependency failed; ``strict`` (all_success) is skipped."""
    results = await project(
        [
            {"id": "broken", "description": "broken"},
            {
                "id": "each",
                "for_each": [0, 1],
                "depends_on": ["broken"],
                "trigger": "all_done",
                "description": "{{ item }}",
            },
            {"id": "strict", "for_each": [0, 1], "depends_on": ["broken"], "description": "{{ item }}"},
        ],
        failing_on("broken"),
    ).run()

    assert results["each"].status is ExecutionStatus.SUCCESS and results["each[1]"].output == "1"
    strict = results["strict"]
    assert strict.status is ExecutionStatus.SKIPPED and strict.error is not None
    assert strict.error.type == "upstream_failed" and "strict[0]" not in results


async def test_trigger_rules_per_item() -> None:
    """Per item, ``draft`` (all_done) runs for the item whose classification failed; ``strict`` (all_success) is
    skipped for that item alone."""
    results = await project(
        [
            {"id": "classify", "for_each": [0, 1, 2], "description": "classify {{ item }}"},
            per_item("draft", for_each=[0, 1, 2], key=None, trigger="all_done", description="draft {{ item }}"),
            per_item("strict", for_each=[0, 1, 2], key=None, description="strict {{ item }}"),
        ],
        failing_on("classify 1"),
    ).run()

    assert [results[f"draft[{i}]"].status for i in range(3)] == ["success"] * 3
    assert [results[f"strict[{i}]"].status for i in range(3)] == ["success", "skipped", "success"]
    assert results["strict[1]"].error is not None and results["strict[1]"].error.type == "upstream_failed"
    assert results["draft"].status is ExecutionStatus.SUCCESS


async def test_per_item_dependencies_that_ended_before_the_expansion_count_in_the_trigger_rule() -> None:
    """``draft`` waits for ``slow`` too, so every ``classify`` instance ended (one failed) before it expands."""
    results = await project(
        [
            {"id": "classify", "for_each": [0, 1], "description": "classify {{ item }}"},
            {"id": "slow", "description": "slow"},
            {
                **per_item("draft", for_each=[0, 1], key=None, description="draft {{ item }}"),
                "depends_on": [{"task": "classify", "per_item": True}, "slow"],
                "trigger": "none_failed",
            },
        ],
        failing_on("classify 0"),
        max_concurrency=1,
    ).run()

    assert results["draft[0]"].status is ExecutionStatus.SKIPPED and results["draft[1]"].output == "draft 1"
    assert results["draft"].status is ExecutionStatus.FAILED or results["draft"].status is ExecutionStatus.SKIPPED


# -- code steps ----------------------------------------------------------------------------------------------------


def label(context: StepContext) -> dict[str, Any]:
    """A code step in a map: its item, index, params and its per-item dependency's instance."""
    urgent = str(context.tasks["classify"].parsed["urgent"]).lower()
    return {"id": context.item["id"], "index": context.index, "tag": context.params["tags"][urgent]}


async def test_a_code_step_in_a_map_gets_item_index_and_its_per_item_dependency() -> None:
    model = Model(lambda p: urgency(p) if p.startswith("classify") else p)
    results = await project(
        [
            CLASSIFY,
            per_item(
                "label",
                type="python",
                call="tests.test_for_each_pipelines:label",
                params={"tags": {"true": "P1", "false": "P3"}},
                output_format="json",
            ),
            {
                "id": "board",
                "depends_on": ["label"],
                "description": "{{ tasks.label.parsed | map(attribute='tag') | join }}",
            },
        ],
        model,
    ).run()

    assert results["label[c3]"].parsed == {"id": "c3", "index": 2, "tag": "P1"}
    assert results["label[c3]"].provider == "python"
    assert results["board"].output == "P1P3P1"


# -- output files and attachments ----------------------------------------------------------------------------------


async def test_an_output_file_per_item(tmp_path: Path) -> None:
    results = await project(
        [{**CLASSIFY, "output_file": "triage/{{ item.id }}-{{ index }}.json"}],
        Model(urgency),
        folder=tmp_path,
    ).run()

    for index, ticket in enumerate(TICKETS):
        path = tmp_path / "triage" / f"{ticket['id']}-{index}.json"
        assert json.loads(path.read_text()) == {"urgent": ticket["id"] != "b2"}
        assert results[f"classify[{ticket['id']}]"].output_path == str(path)


async def test_an_output_file_of_a_kept_instance_is_written_again_on_resume(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    orchestrator = project(
        [{**CLASSIFY, "output_file": "out/{{ item.id }}.json"}], Model(urgency), folder=tmp_path, store=store
    )
    await orchestrator.run()
    (tmp_path / "out" / "a1.json").unlink()

    model = Model(urgency)
    resumed = project([{**CLASSIFY, "output_file": "out/{{ item.id }}.json"}], model, folder=tmp_path, store=store)
    await resumed.resume(orchestrator.run_id or "")
    assert json.loads((tmp_path / "out" / "a1.json").read_text()) == {"urgent": True} and model.calls == {}


async def test_attachments_per_item(tmp_path: Path) -> None:
    (tmp_path / "shots").mkdir()
    shots = [{"id": f"s{n}", "path": f"shots/{n}.png"} for n in range(3)]
    for n in range(3):
        (tmp_path / "shots" / f"{n}.png").write_bytes(media.png(b"shot %d" % n))
    received: dict[str, list[str]] = {}

    async def answer(messages: Sequence[Message], options: GenerationOptions) -> str:
        received[messages[-1].content] = [a.name for a in messages[-1].attachments]
        return "seen"

    orchestrator = project(
        [
            {
                "id": "look",
                "for_each": shots,
                "key": "{{ item.id }}",
                "description": "describe {{ item.id }}",
                "attachments": ["{{ item.path }}"],
            }
        ],
        folder=tmp_path,
    )
    orchestrator.llms = {"m": FunctionLlm(answer)}
    results = await orchestrator.run()

    assert received == {f"describe s{n}": [f"{n}.png"] for n in range(3)}
    assert results["look"].status is ExecutionStatus.SUCCESS


async def test_an_attachment_an_item_names_outside_the_folder_fails_that_instance(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(media.png())
    results = await project(
        [{"id": "look", "for_each": ["ok.png", "../escape.png"], "description": "look", "attachments": ["{{ item }}"]}],
        folder=tmp_path,
    ).run()

    assert results["look[0]"].status is ExecutionStatus.SUCCESS
    failed = results["look[1]"]
    assert failed.status is ExecutionStatus.FAILED and failed.error is not None
    assert failed.error.type == "invalid_request" and failed.attempts == 0


# -- review gates and the answer cache -----------------------------------------------------------------------------


async def test_review_gates_on_instances_are_decided_under_their_own_ids(tmp_path: Path) -> None:
    seen: list[str] = []

    def reviewer(gate: Gate) -> Decision:
        seen.append(gate.task_id)
        if gate.task_id == "each[1]":
            return Decision(DecisionKind.REJECT, actor="bot", message="no")
        return Decision(DecisionKind.APPROVE, actor="bot")

    orchestrator = project(
        [
            {
                "id": "each",
                "for_each": [0, 1, 2],
                "description": "item {{ item }}",
                "review": {"policy": "require_human"},
            }
        ],
        store=tmp_path / "runs.db",
    )
    orchestrator.on_review = reviewer
    events: list[RunEvent] = []
    orchestrator.on_event(events.append)
    with anyio.fail_after(20):
        results = await orchestrator.run()

    assert sorted(seen) == ["each[0]", "each[1]", "each[2]"]
    assert results["each[1]"].error is not None and results["each[1]"].error.type == "review_rejected"
    assert results["each[0]"].review is not None and results["each[0]"].review.actor == "bot"
    assert {e.task_id for e in events if e.kind == "review_requested"} == set(seen)
    gates = RunStore(tmp_path / "runs.db").gates_of(orchestrator.run_id or "", "each[2]")
    assert [g.task_id for g in gates] == ["each[2]"]


class CachedLlm(FunctionLlm):
    """A function whose answers the answer cache keeps (as a provider's are)."""

    cacheable = True


async def test_each_instance_has_its_own_cache_entry(tmp_path: Path) -> None:
    """The second run answers every instance from the cache; ``each[0]`` and ``each[2]`` send the same prompt but
    are cached apart (each under its own key, with its item)."""
    store = tmp_path / "runs.db"
    tasks = [{"id": "each", "for_each": ["x", "y", "x"], "description": "say {{ item }}"}]
    first, again = Model(), Model()
    for model in (first, again):
        orchestrator = project(tasks, store=store, cache=True)
        orchestrator.llms = {"m": CachedLlm(model)}
        results = await orchestrator.run()

    assert first.calls == {"say x": 2, "say y": 1} and again.calls == {}
    hits = [results[f"each[{n}]"].cache for n in range(3)]
    assert all(hit is not None and hit.hit for hit in hits)
    assert len({hit.key for hit in hits if hit is not None}) == 3


def test_an_instance_s_gate_is_decided_with_orchestrate_review_then_resumed(tmp_path: Path) -> None:
    """``run --no-wait`` stops at the instances' gates (exit 3); ``orchestrate review RUN 'each[b]' ...`` decides
    each under its own id; the resume finishes the map."""
    from typer.testing import CliRunner

    from orchestration.cli.app import app

    path = tmp_path / "gated.yaml"
    path.write_text(
        "name: gated\nagents: {m: {type: offline}}\ndefaults: {agent: m}\ntasks:\n"
        "  - {id: each, for_each: [a, b], key: '{{ item }}', description: 'say {{ item }}',"
        " review: {policy: require_human}}\n"
    )
    store = str(tmp_path / "runs.db")

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.output

    code, output = invoke("run", str(path), "--store", store, "--no-wait", "-q")
    assert code == 3, output
    code, listed = invoke("reviews", "--store", store, "--json")
    assert code == 0 and sorted(g["task_id"] for g in json.loads(listed)) == ["each[a]", "each[b]"]
    assert invoke("review", "latest", "each[a]", "approve", "--store", store)[0] == 0
    assert invoke("review", "latest", "each[b]", "edit", "--output", "B!", "--store", store)[0] == 0
    results = tmp_path / "results.json"
    code, output = invoke("resume", "latest", "--store", store, "-q", "--results", str(results))
    assert code == 0, output
    document = json.loads(results.read_text())["results"]
    assert document["each[b]"]["output"] == "B!" and document["each"]["status"] == "success"
