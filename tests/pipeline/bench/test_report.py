"""Every benchmark's report: JSON always, a PNG only when there is a chart and matplotlib to draw it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aet.pipeline.bench.report import Chart, bar_chart, environment, write_report


def test_the_json_is_the_report_and_no_chart_means_no_png(tmp_path: Path) -> None:
    out = tmp_path / "results"
    write_report({"benchmark": "x", "when": Path("a")}, out, "x")
    assert json.loads((out / "x.json").read_text()) == {"benchmark": "x", "when": "a"}  # default=str
    assert not (out / "x.png").exists()


def test_a_bar_chart_is_drawn_next_to_the_json(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_report({"benchmark": "y"}, tmp_path, "y", bar_chart({"a": 10.0, "b": 2000.0}, "messages/s", "aet bench y"))
    assert (tmp_path / "y.png").read_bytes().startswith(b"\x89PNG")


def test_a_custom_chart_draws_on_the_axes_it_is_given(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    drawn: list[Any] = []
    write_report({"benchmark": "z"}, tmp_path, "z", Chart(size=(4, 3), draw=drawn.append))
    assert len(drawn) == 1 and hasattr(drawn[0], "plot")
    assert (tmp_path / "z.png").is_file()


def test_environment_names_what_the_numbers_depend_on() -> None:
    env = environment()
    assert set(env) == {"python", "torch", "threads", "cpu_count", "device", "cpu"}
    assert env["cpu"]["model"] and isinstance(env["cpu"]["flags"], list)  # machines of one kind differ in these
