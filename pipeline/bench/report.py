"""How a benchmark reports: ``NAME.json`` under ``--out``, and ``NAME.png`` when matplotlib is installed.

Every benchmark writes its result through :func:`write_report`, so the files,
their format and the optional plot behave the same for all of them; a benchmark
only says what to draw (:func:`bar_chart` for the common case, or its own
:class:`Chart`). matplotlib is an optional extra (``bench``): without it the
JSON is written and the plot skipped. :func:`environment` describes the machine
the numbers were measured on, for the report.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Chart:
    """A plot next to a report: the figure size in inches and a function that draws on the figure's axes."""

    size: tuple[float, float]
    draw: Callable[[Any], None]


def bar_chart(bars: Mapping[str, float], unit: str, title: str) -> Chart:
    """Horizontal bars, one per configuration, each labelled with its value; taller for many bars."""

    def draw(ax: Any) -> None:
        ax.barh(list(bars), list(bars.values()), color="#4C72B0")
        ax.set_xlabel(unit)
        ax.set_title(title)
        for i, v in enumerate(bars.values()):
            ax.text(v, i, f" {v:,.0f}", va="center")

    return Chart(size=(7, max(3.5, 0.25 * len(bars) + 1)), draw=draw)


def write_report(report: Mapping[str, Any], out: Path, name: str, chart: Chart | None = None) -> None:
    """Write ``report`` as ``NAME.json`` under ``out`` and, when matplotlib is installed, ``chart`` as ``NAME.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    if chart is None:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=chart.size)
    chart.draw(ax)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)


def environment() -> dict[str, Any]:
    """Python, torch, threads, CPU model and vector flags, and device: what the numbers depend on besides the code.

    Machines of one kind differ (e.g. AMD with AVX-512 VNNI, Intel without), and int8 or bf16 speed
    depends on those flags, so every report names them.
    """
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name and its SIMD flags that matter for inference (AVX2, AVX-512*, VNNI, AMX)."""
    model, flags = platform.processor() or platform.machine(), list[str]()
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = sorted(f for f in value.split() if f.startswith(("avx", "amx")) or "vnni" in f or f == "fma")
    except OSError:
        pass
    return {"model": model, "flags": flags}
