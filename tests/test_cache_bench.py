"""The answer cache benchmark, small: a second run of the example makes no request and saves what the first cost."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.cache_bench import main
from benchmarks.report import cache_tables


def test_a_small_run_measures_lookups_and_the_second_run_s_savings(tmp_path: Path) -> None:
    out = tmp_path / "cache.json"
    main(["--entries", "50", "--tasks", "20", "--repeats", "1", "--answer-words", "30", "--out", str(out)])
    document = json.loads(out.read_text())
    assert all(value > 0 for value in document["lookup"]["us_per_task"].values())
    first, second = document["savings"]["runs"]
    assert first["requests"] == first["tasks"] == 5 and first["hits"] == 0 and first["cost_usd"] > 0
    assert second["requests"] == 0 and second["hits"] == 5 and second["cost_usd"] == 0
    assert abs(second["saved_usd"] - first["cost_usd"]) < 1e-12
    [(_, _, lookups), (_, _, runs)] = cache_tables(document)
    assert len(lookups) == 1 and [row[1] for row in runs] == ["5", "0"]
