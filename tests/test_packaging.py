"""AET installs as one namespace, ``aet``, beside PyPI's ``adapters`` (AdapterHub), ``pipeline`` and ``storage``."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"pipeline": "aet.pipeline", "adapters": "aet.adapters", "storage": "aet.storage"}
ADAPTERHUB = "adapters==1.3.0"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_folder_is_installed_under_aet() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
    found = set()
    for folder, package in FOLDERS.items():
        for module in (REPO / folder).rglob("*.py"):  # a folder with Python files is a package (migrations too)
            relative = module.parent.relative_to(REPO / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == set(setuptools["packages"]), "add (or remove) sub-packages in pyproject.toml's packages"


def test_no_module_imports_the_folders_as_top_level_packages() -> None:
    offenders = []
    for path in [
        *REPO.glob("pipeline/**/*.py"),
        *REPO.glob("adapters/**/*.py"),
        *REPO.glob("storage/**/*.py"),
        *REPO.glob("tests/**/*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in FOLDERS]
    assert offenders == []


@pytest.mark.slow
def test_aet_installs_beside_adapterhub_and_both_import(tmp_path: Path) -> None:
    """A user's environment with AdapterHub: pip resolves transformers 4.57 for both, and both packages work.

    The new virtual environment installs AdapterHub (and the transformers it pins) and AET itself; everything
    else AET needs (torch ...) is read from this test's environment, placed after the new one's own packages.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    outer = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "outer.pth").write_text("\n".join(outer) + "\n", encoding="utf-8")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, ADAPTERHUB], capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        pytest.skip(f"cannot install {ADAPTERHUB} here (no package index?): {installed.stderr[-400:]}")
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, capture_output=True, timeout=600)
    check = """
import importlib.metadata as md, json, adapters, transformers
from adapters import AutoAdapterModel  # AdapterHub's API, not AET's edges
import aet.adapters.bus, aet.pipeline.model
from aet.pipeline.model import SentimentModel
model = SentimentModel.load("minilm", version="t", new_head=True, device="cpu")
probs = model.predict_proba(["Shares of $XYZ plunged after the profit warning."])
print(json.dumps([md.version("adapters"), transformers.__version__, adapters.__file__, aet.adapters.bus.__file__,
                  list(probs.shape), float(probs.sum())]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    out = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    version, transformers_version, hub_file, edge_file, shape, total = json.loads(out.stdout.strip().splitlines()[-1])
    assert version == "1.3.0" and transformers_version.startswith("4.57")
    assert hub_file == str(Path(site) / "adapters" / "__init__.py")  # AdapterHub, from the new environment
    assert edge_file == str(Path(site) / "aet" / "adapters" / "bus.py")  # AET's edges, installed under aet
    assert shape == [1, 3] and total == pytest.approx(1.0, abs=1e-4)
