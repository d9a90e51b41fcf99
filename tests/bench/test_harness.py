"""The bench harness's arithmetic and the goals verdicts (no timing involved)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _harness import Section, Spread, Table, difference, ratio, rotated, rounds, spread
from report import GOALS, MISSES, Goal, judged, read_misses, why_missed


def test_spread_is_median_min_max() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == Spread(2.5, 1.0, 10.0)
    with pytest.raises(ValueError):
        spread([])


def test_ratio_and_difference_are_taken_round_by_round() -> None:
    # Round 2 is slow for both sides: the per-round ratio stays 2.
    assert ratio([2.0, 20.0, 4.0], [1.0, 10.0, 2.0]) == Spread(2.0, 2.0, 2.0)
    assert difference([5.0, 7.0], [1.0, 1.0]) == Spread(5.0, 4.0, 6.0)
    with pytest.raises(ValueError):
        ratio([1.0], [1.0, 2.0])


def test_rounds_rotate_the_order_and_collect_every_result() -> None:
    calls: list[str] = []

    def measure(name: str) -> object:
        return lambda: calls.append(name) or len(calls)

    results = rounds({name: measure(name) for name in "abc"}, 3)
    assert calls == [*"abc", *"bca", *"cab"]
    assert results == {"a": [1, 6, 8], "b": [2, 4, 9], "c": [3, 5, 7]}
    assert rotated(["x", "y"], 3) == ["y", "x"]


def test_section_markdown_has_its_tables() -> None:
    section = Section("k", 1, "Title", "How.", [Table("T", ["a", "b"], [["1", "2"]], "note")])
    text = section.markdown()
    assert text.startswith("## Title\n\nHow.")
    assert "| a | b |\n| --- | --- |\n| 1 | 2 |\n\nnote" in text


def test_goal_verdicts_say_met_missed_by_how_much_or_not_measured() -> None:
    goal = Goal("stream within 1.10x", "f", "<=", 1.10)
    assert judged(goal, {})[2:] == ["not measured", "-"]
    assert judged(goal, {"f": {"median": 1.05, "low": 1.0, "high": 1.2}})[3] == "met"
    verdict = judged(goal, {"f": {"median": 1.43, "low": 1.3, "high": 1.9}})
    assert verdict[2] == "1.43x (1.30-1.90)"
    assert verdict[3] == "**missed by 0.33x (30% of the target)**"
    floor = Goal("throughput at least 0.9x", "f", ">=", 0.9)
    tiny = judged(floor, {"f": {"median": 0.8996, "low": 0.84, "high": 0.98}})
    assert tiny[2:] == ["0.8996x (0.84-0.98)", "**missed by 0.0004x (under 1% of the target)**"]
    ceiling = Goal("a decision under 5 µs", "f", "<=", 5, " µs")
    close = judged(ceiling, {"f": {"median": 5.2, "low": 5.0, "high": 8.0}})
    assert close[2:] == ["5.2 µs (5-8)", "**missed by 0.2 µs**"]
    floor = Goal("at least 0.9x", "g", ">=", 0.9)
    assert judged(floor, {"g": {"median": 0.45, "low": 0.45, "high": 0.45}})[3].startswith(
        "**missed by 0.45x"
    )
    micro = Goal("hop within 0.3 ms", "h", "<=", 300, " µs")
    assert judged(micro, {"h": {"median": 620, "low": 600, "high": 640}})[3] == (
        "**missed by 320 µs**"
    )


def test_every_goal_names_a_figure_some_bench_records() -> None:
    sources = "".join(p.read_text() for p in (Path(__file__).parents[2] / "bench").glob("*.py"))
    for goal in GOALS:
        stem = goal.figure.split(".")[0]
        assert f'"{stem}.' in sources or f'f"{stem}.' in sources, goal.figure


def test_a_missed_goal_shows_why_from_the_misses_file(tmp_path: Path) -> None:
    notes = tmp_path / "misses.md"
    notes.write_text("# Why\n\n## f\nThe decoder\ndominates.\n\n## other\nUnused.\n")
    explained = read_misses(notes)
    assert explained == {"f": "The decoder dominates.", "other": "Unused."}
    goal = Goal("stream within 1.10x", "f", "<=", 1.10)
    lines = why_missed([goal], explained)
    assert lines[2] == "- stream within 1.10x: The decoder dominates."
    assert why_missed([Goal("unexplained", "g", "<=", 1.0)], explained) == []
    assert read_misses(tmp_path / "absent.md") == {}


def test_every_explained_miss_names_a_goal() -> None:
    figures = {goal.figure for goal in GOALS}
    assert set(read_misses(MISSES)) <= figures
