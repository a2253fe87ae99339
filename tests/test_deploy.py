"""The deployment files parse and start only roles that the ``aet`` command line has."""

from __future__ import annotations

import re

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


def test_prometheus_rules_use_exported_metric_names() -> None:
    from aet.pipeline import metrics

    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alert_rules.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        names = set(re.findall(r"aet_[a-z_]+", rule["expr"]))
        assert {n.removesuffix("_total") for n in names} <= exported, rule["alert"]
