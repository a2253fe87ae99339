"""The deployment files: they parse, validate against Kubernetes' schemas, run only commands and settings that
exist, and name only metrics a daemon exports (and plot every one it does)."""

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


def test_compose_services_run_known_roles() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    roles = {name: svc["command"] for name, svc in compose["services"].items() if "command" in svc}
    assert roles, "no AET services in docker-compose.yml"
    assert all(_command_exists(args) for args in roles.values()), roles
    for name in ("scorer", "monitor", "trainer", "alerter"):
        assert "--metrics-port" in compose["services"][name]["command"], name


def _k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def _workloads() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == "Deployment"}


def _command_exists(args: list[str]) -> bool:
    """Whether ``aet ARGS`` names a command (a group's subcommand included), the options being the command's own."""
    command: Any = typer.main.get_command(app)
    words = [a for a in args if not a.startswith("-")]
    for word in words:
        commands = getattr(command, "commands", None)
        if commands is None:
            break
        if word not in commands:
            return False
        command = commands[word]
    if getattr(command, "commands", None) is not None:
        return False  # a group named without its subcommand
    options = {opt for p in command.params for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
    return all(a.split("=")[0] in options for a in args if a.startswith("--"))


def _setting_exists(variable: str) -> bool:
    """Whether ``AET_X__Y`` names a field of the settings (``X.Y``)."""
    from pydantic import BaseModel

    from aet.pipeline.config import Settings

    model: type[BaseModel] = Settings
    parts = variable.removeprefix("AET_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i < len(parts) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


#: AET_ variables that are not settings: read directly by the process.
NOT_SETTINGS = {"AET_METRICS_ADDR", "AET_CONFIG"}


def test_every_k8s_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for doc in _k8s_docs():
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_role_has_a_workload_that_runs_an_existing_command_with_probes_as_non_root() -> None:
    workloads = _workloads()
    assert set(workloads) == {
        f"aet-{r}" for r in ("scorer", "monitor", "trainer", "alerter", "fast-path", "dead-letters")
    }
    for name, doc in workloads.items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        [container] = pod["containers"]
        assert _command_exists(container["args"]), (name, container["args"])
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert "--metrics-port" in container["args"], name


def test_scorers_autoscale_on_lag_the_trainer_gets_a_gpu_and_a_budget_guards_the_scorers() -> None:
    docs = _k8s_docs()
    [hpa] = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "aet-scorer"
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "aet_consumer_lag_records"
    trainer = _workloads()["aet-trainer"]["spec"]["template"]["spec"]
    assert trainer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["containers"][0]["image"] == "aet:cuda"
    [budget] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"] == _workloads()["aet-scorer"]["spec"]["selector"]["matchLabels"]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for doc in _workloads().values():
        for volume in doc["spec"]["template"]["spec"]["volumes"]:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_every_referenced_setting_exists() -> None:
    variables: set[str] = set()
    for doc in _k8s_docs():
        if doc["kind"] in ("ConfigMap", "Secret"):
            variables |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    variables |= set(compose["x-aet"]["environment"])
    variables |= set(re.findall(r"\b(AET_[A-Z0-9_]+)", (DEPLOY / "systemd" / "aet@.service").read_text()))
    aet = {v for v in variables if v.startswith("AET_")} - NOT_SETTINGS
    assert aet and not sorted(v for v in aet if not _setting_exists(v)), "variables that name no setting"
    assert not _setting_exists("AET_BUS__NO_SUCH_SETTING"), "the check itself must be able to fail"


def test_the_image_runs_as_a_non_root_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "ARG TORCH_INDEX" in dockerfile, "the CUDA variant is built with another torch index"


def test_systemd_unit_runs_a_role_and_notifies() -> None:
    unit = (DEPLOY / "systemd" / "aet@.service").read_text()
    assert re.search(r"^ExecStart=\S+/aet .*%i", unit, re.M)
    assert "KillSignal=SIGTERM" in unit
    assert re.search(r"^Type=notify$", unit, re.M) and re.search(r"^WatchdogSec=\d+", unit, re.M)


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
