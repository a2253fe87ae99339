"""Show the Grafana dashboard working on real series: a short AET run scraped by a real Prometheus.

Starts Prometheus (Debian's ``prometheus`` package) scraping an embedded ``aet run --metrics-port`` every
2 s with deploy/prometheus/alert_rules.yml loaded, evaluates every panel query of
deploy/grafana/dashboards/aet.json over the run through the HTTP API (``/api/v1/query_range``), and plots
them into one PNG with matplotlib (Grafana itself does not install here). It also writes a JSON report:
series and points per panel, and the alerts Prometheus had pending or firing at the end.

    python deploy/prometheus/dashboard_run.py --home HOME_WITH_A_CHAMPION --out docs/img/dashboard.png

The installation in ``--home`` is copied first, so the run leaves it as it was.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "aet.json"
RULES = REPO / "deploy" / "prometheus" / "alert_rules.yml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api(base: str, path: str, **params: Any) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def prometheus_config(target: str) -> str:
    return (
        "global: {scrape_interval: 2s, evaluation_interval: 5s}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        "scrape_configs:\n"
        f"  - job_name: aet\n    static_configs: [{{targets: [{json.dumps(target)}]}}]\n"
    )


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p.get("targets")]


def plot(results: list[dict[str, Any]], start: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, results, strict=False):
        lines = panel["lines"]
        shown = 6  # legend entries; a panel with more series (a version each) says how many
        more = f" ({len(lines)} series)" if len(lines) > shown else ""
        ax.set_title(panel["title"] + more, fontsize=8)
        for i, line in enumerate(lines):
            xs = [t - start for t, _ in line["values"]]
            label = line["legend"][:40] if i < shown else None
            ax.plot(xs, [v for _, v in line["values"]], label=label, linewidth=1)
        if lines:
            ax.legend(fontsize=5, loc="best")
        else:
            ax.text(0.5, 0.5, "no series in this run", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("s since start", fontsize=6)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = fmt
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return re.sub(r"\{\{\w+\}\}", "-", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="An AET home with a registered champion.")
    parser.add_argument("--data", type=Path, default=REPO / "examples" / "stream.jsonl")
    parser.add_argument("--rate", type=float, default=10.0, help="Messages a second the replay publishes.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "dashboard.png")
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aet-dashboard-"))
    home = work / "home"
    shutil.copytree(args.home, home)
    metrics_port, prom_port = free_port(), free_port()
    (work / "prometheus.yml").write_text(prometheus_config(f"127.0.0.1:{metrics_port}"))
    base = f"http://127.0.0.1:{prom_port}"
    prom = subprocess.Popen(
        [
            args.prometheus,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "prometheus.log", "wb"),  # noqa: SIM115 - the child keeps it open
    )
    try:
        wait_for(lambda: api(base, "/api/v1/status/buildinfo") is not None, 60, "Prometheus")
        start = time.time()
        aet = [sys.executable, "-m", "aet.pipeline.cli", "--home", str(home), "run", "--data", str(args.data)]
        aet += ["--rate", str(args.rate), "--label-fraction", "1", "--metrics-port", str(metrics_port), "--no-progress"]
        done = subprocess.run(aet, cwd=REPO, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        end = time.time() + 2
        time.sleep(4)  # the rules' last evaluation
        results = []
        for panel in panels():
            lines = []
            for target in panel["targets"]:
                data = api(base, "/api/v1/query_range", query=target["expr"], start=start, end=end, step=2)
                for series in data["result"]:
                    values = [(float(t), float(v)) for t, v in series["values"]]
                    lines.append({"legend": legend(target["legendFormat"], series["metric"]), "values": values})
            results.append({"title": panel["title"], "lines": lines})
        alerts = api(base, "/api/v1/alerts")["alerts"]
    finally:
        prom.terminate()
        prom.wait(30)
    plot(results, start, args.out)
    report = {
        "run_s": round(end - start, 1),
        "panels": len(results),
        "panels_with_series": sum(1 for r in results if r["lines"]),
        "series": {r["title"]: len(r["lines"]) for r in results},
        "points": sum(len(line["values"]) for r in results for line in r["lines"]),
        "alerts": [{"alert": a["labels"]["alertname"], "state": a["state"]} for a in alerts],
        "aet_run_summary": done.stdout.strip().splitlines()[-20:],
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "aet_run_summary"}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
