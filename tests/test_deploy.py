"""The deployment files parse and start only roles that the ``aet`` command line has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml

from aet.pipeline.cli.main import app
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def _commands() -> set[str]:
    return set(typer.main.get_command(app).commands)


def test_compose_services_run_known_roles() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    roles = {name: svc["command"][0] for name, svc in compose["services"].items() if "command" in svc}
    assert roles, "no AET services in docker-compose.yml"
    assert set(roles.values()) <= _commands(), roles
    for name in ("scorer", "monitor", "trainer", "alerter"):
        assert "--metrics-port" in compose["services"][name]["command"], name


def test_k8s_and_systemd_roles_exist() -> None:
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "scorer.yaml").read_text()):
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert container["args"][0] in _commands()
    unit = (DEPLOY / "systemd" / "aet@.service").read_text()
    assert re.search(r"^ExecStart=\S+/aet .*%i", unit, re.M)
    assert "KillSignal=SIGTERM" in unit


@pytest.fixture(scope="module")
def scraped() -> Iterator[set[str]]:
    """The series names a daemon's ``/metrics`` offers, scraped over HTTP from the server every daemon runs.

    Every role's process imports the one metrics module, so one daemon's endpoint lists every family;
    histograms add their ``_bucket``, ``_sum`` and ``_count`` series. ``*_created`` gauges are left out.
    """
    from aet.pipeline.health import Readiness
    from aet.pipeline.metrics import MetricsServer

    server = MetricsServer(0, "127.0.0.1", Readiness("scorer"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if name.endswith("_created"):
            continue
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    yield names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:aet|process)_[a-z0-9_]+)", expr))


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alert_rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _panel_exprs() -> dict[str, str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "aet.json").read_text())
    return {
        f"{panel['title']} [{t['refId']}]": t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])
    }


def test_rules_and_panels_name_only_metrics_a_daemon_exports(scraped: set[str]) -> None:
    named = {rule["alert"]: rule["expr"] for rule in _rules()} | _panel_exprs()
    unknown = {where: sorted(_metric_names(expr) - scraped) for where, expr in named.items()}
    assert not {k: v for k, v in unknown.items() if v}, "names no daemon exports"


#: Series the dashboard does not need to plot, with the reason.
NOT_PLOTTED: dict[str, str] = {}
#: The failure modes an operator must be alerted on (issue 17), by the series that show them.
ALERTED = {
    "aet_consumed_records_total": "no messages at all",
    "aet_consumer_lag_records": "lag",
    "aet_rejected_records_total": "dead letters",
    "aet_retries_total": "retries",
    "aet_worker_degraded": "broker or database away",
    "aet_live_accuracy": "accuracy falling",
    "aet_drift_events_total": "drift storms",
    "aet_training_rounds_total": "retrains failing",
    "aet_model_swaps_total": "swaps refused",
    "aet_alert_deliveries_total": "alerts not delivered",
    "aet_alert_outbox_enqueued_total": "outbox backlog",
    "aet_model_info": "no scorer serving",
}


def test_every_exported_series_is_on_the_dashboard_and_the_failure_modes_have_rules(scraped: set[str]) -> None:
    plotted = set().union(*(_metric_names(e) for e in _panel_exprs().values()))
    families = {n for n in scraped if n.startswith("aet_") and not n.endswith(("_sum", "_count"))}
    histograms = {n.removesuffix("_bucket") for n in families if n.endswith("_bucket")}
    missing = sorted(n for n in families - histograms - set(NOT_PLOTTED) if n not in plotted)
    assert not missing, f"exported but on no dashboard panel: {missing}"
    alerted = set().union(*(_metric_names(rule["expr"]) for rule in _rules()))
    assert not {name: why for name, why in ALERTED.items() if name not in alerted}, "failure modes without a rule"


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    done = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alert_rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_uses() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "aet.json").read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {source["uid"]}
    [provider] = yaml.safe_load((provisioning / "dashboards" / "aet.yml").read_text())["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
