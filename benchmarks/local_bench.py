"""Local-model throughput: N concurrent tasks through the orchestrator vs mlx-lm's own batch generate.

Both sides decode the same prompts greedily for the same number of tokens on one
random llama built here (end-of-sequence suppressed, so every request runs to
``max_tokens``), after a warm-up round; the model is loaded once and held for the
whole benchmark, so load time is not counted. Prints a table and writes
``benchmarks/results/local.json``.

    python benchmarks/local_bench.py            # full: 8, 16 and 32 tasks
    python benchmarks/local_bench.py --quick    # one small size, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from agent_registry import AgentRegistry  # noqa: E402
from llm_abstractions import LlmConfig, create_llm  # noqa: E402
from orchestration import ProjectOrchestrator, ProjectSpec  # noqa: E402
from tests.local.tiny_models import build_tiny_llama  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "local.json"


def prompts(n: int) -> list[str]:
    return [f"task {i}: the quick brown fox jumps over the lazy dog {i}" for i in range(n)]


def runtime_batch(model: Any, tokenizer: Any, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """mlx-lm's own batch API on the prompts: (seconds, generated tokens)."""
    from mlx_lm.generate import batch_generate

    tokens = [tokenizer.encode(text) for text in texts]
    start = time.perf_counter()
    response = batch_generate(model, tokenizer, tokens, max_tokens=max_tokens, return_token_ids=True)
    elapsed = time.perf_counter() - start
    assert response.token_ids is not None
    return elapsed, sum(len(ids) for ids in response.token_ids)


def orchestrated(path: Path, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """The same prompts as one project of independent tasks on an ``mlx`` agent: (seconds, tokens)."""
    registry = AgentRegistry.default()
    spec = ProjectSpec.model_validate(
        {
            "agents": {"local": {"type": "mlx", "model": str(path), "options": {"temperature": 0}}},
            "defaults": {"agent": "local", "max_concurrency": len(texts), "retries": 0},
            "tasks": [
                {"id": f"t{i}", "description": text, "options": {"max_tokens": max_tokens}}
                for i, text in enumerate(texts)
            ],
        }
    )
    orchestrator = ProjectOrchestrator(spec, registry=registry)
    orchestrator.validate()
    start = time.perf_counter()
    results = anyio.run(orchestrator.run)
    elapsed = time.perf_counter() - start
    failed = [r for r in results.values() if not r.succeeded]
    assert not failed, failed[0].error
    return elapsed, sum(r.usage.output_tokens for r in results.values() if r.usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small size, fewer repeats")
    parser.add_argument("--tasks", type=int, nargs="*", help="numbers of concurrent tasks")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--hidden-size", type=int, default=128, help="width of the random model")
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    sizes = args.tasks or ([8] if args.quick else [8, 16, 32])
    max_tokens = args.max_tokens or (32 if args.quick else 128)
    repeats = args.repeats or (3 if args.quick else 5)

    from mlx_lm import load

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llama(Path(tmp) / "model", hidden_size=args.hidden_size, layers=args.layers)
        model, tokenizer = load(str(path))

        # Hold the model between runs: the orchestrator's agent shares this loaded runner.
        holder = create_llm(LlmConfig(name="holder", provider="mlx", model=str(path)))
        runner = anyio.run(holder.runner)
        for n in sizes:
            texts = prompts(n)
            runtime_batch(model, tokenizer, texts, max_tokens)  # warm-up
            orchestrated(path, texts, max_tokens)
            base: list[tuple[float, int]] = []
            ours: list[tuple[float, int]] = []
            steps_before = runner.stats.steps
            for _ in range(repeats):  # alternate, so drifting machine load hits both sides alike
                base.append(runtime_batch(model, tokenizer, texts, max_tokens))
                ours.append(orchestrated(path, texts, max_tokens))
            steps = (runner.stats.steps - steps_before) / repeats
            base_tps = statistics.median(tokens / s for s, tokens in base)
            ours_tps = statistics.median(tokens / s for s, tokens in ours)
            ratio = statistics.median((t2 / s2) / (t1 / s1) for (s1, t1), (s2, t2) in zip(base, ours, strict=True))
            rows.append(
                {
                    "tasks": n,
                    "max_tokens": max_tokens,
                    "runtime_tokens_per_s": round(base_tps, 1),
                    "orchestrator_tokens_per_s": round(ours_tps, 1),
                    "ratio": round(ratio, 3),
                    "runtime_s": round(statistics.median(s for s, _ in base), 4),
                    "orchestrator_s": round(statistics.median(s for s, _ in ours), 4),
                    "orchestrator_steps_per_run": steps,
                }
            )
        anyio.run(holder.aclose)

    print(f"{'tasks':>6} {'max_tok':>8} {'mlx-lm tok/s':>13} {'orchestrate tok/s':>18} {'ratio':>6} {'steps':>6}")
    for row in rows:
        print(
            f"{row['tasks']:>6} {row['max_tokens']:>8} {row['runtime_tokens_per_s']:>13.1f} "
            f"{row['orchestrator_tokens_per_s']:>18.1f} {row['ratio']:>6.3f} {row['orchestrator_steps_per_run']:>6.0f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "local",
                "runtime": "mlx-lm batch_generate",
                "model": f"random llama, hidden {args.hidden_size}, {args.layers} layers, vocab 320",
                "quick": args.quick,
                "repeats": repeats,
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
