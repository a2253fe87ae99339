"""The architecture, checked: the layering contracts of pyproject.toml hold, and no two files import each other.

The contracts (``[tool.importlinter]``) say that ``aet.pipeline`` reaches no broker,
database or concrete edge except through its composition root and its CLI, and that
``aet.storage`` and ``aet.adapters`` see only the pipeline's shared modules (records,
ports, config, metrics). The cycle check counts imports inside functions too and
ignores those under ``if TYPE_CHECKING:``. Each check is also run on a small broken
package written to a temporary directory, to show that it fails when the rule is
broken: a green run means the rule held, not that nothing was looked at.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
ROOTS = ("aet.pipeline", "aet.adapters", "aet.storage")
SHARED = {
    "aet.pipeline",
    "aet.pipeline.records",
    "aet.pipeline.ports",
    "aet.pipeline.config",
    "aet.pipeline.metrics",
    "aet.pipeline.redaction",
    "aet.pipeline.health",  # imported by metrics (its HTTP server answers the probes); imports only redaction
}


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter's ``lint-imports`` on ``config`` (exit status 0: every contract kept)."""
    sibling = Path(sys.executable).with_name("lint-imports")
    binary = str(sibling) if sibling.exists() else shutil.which("lint-imports")
    if binary is None:
        pytest.fail("import-linter is not installed: pip install -e '.[dev]'")
    return subprocess.run(
        [binary, str(config), "--no-cache", "--no-logo"], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def import_graph(*packages: str) -> grimp.ImportGraph:
    """Imports between the files of ``packages``, including imports inside functions, without ``TYPE_CHECKING`` ones."""
    return grimp.build_graph(
        *packages, include_external_packages=False, exclude_type_checking_imports=True, cache_dir=None
    )


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The groups of modules that import one another in a circle (strongly connected components, Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in edges.get(module, ()):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in edges.get(module, ()):
                found.append(sorted(group))

    for module in sorted(edges):
        if module not in order:
            visit(module)
    return sorted(found)


def file_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    return cycles({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules})


def write_package(root: Path, name: str, files: Mapping[str, str]) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in files.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))


# -- the layering --------------------------------------------------------------------------


def test_the_layering_contracts_hold() -> None:
    result = lint_imports(PYPROJECT, REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_edge_contract_names_every_pipeline_module_but_the_shared_ones() -> None:
    """A new module of aet.pipeline is forbidden to storage and adapters unless it is added to the shared ones."""
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    [edges] = [c for c in contracts if c["id"] == "edges-see-shared-modules"]
    forbidden = edges["forbidden_modules"]
    modules = [m for m in import_graph(*ROOTS).modules if m.startswith("aet.pipeline")]
    uncovered = [m for m in modules if m not in SHARED and not any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert uncovered == []
    assert not any(s == f or s.startswith(f + ".") for s in SHARED for f in forbidden)


@pytest.mark.parametrize("broken", [False, True])
def test_a_broken_contract_fails_the_check(tmp_path: Path, broken: bool) -> None:
    """The same kind of contract on a tiny package: an import inside a function is enough to break it."""
    write_package(
        tmp_path,
        "layered",
        {
            "ports": "class Port: ...\n",
            "edge": "from layered.ports import Port\n\n\nclass Edge(Port): ...\n",
            "role": (
                "from layered.ports import Port\n\n\ndef build() -> Port:\n    from layered.edge import Edge\n\n"
                "    return Edge()\n"
                if broken
                else "from layered.ports import Port\n\n\ndef build(port: Port) -> Port:\n    return port\n"
            ),
        },
    )
    config = tmp_path / "contracts.toml"
    config.write_text(
        textwrap.dedent(
            """\
            [tool.importlinter]
            root_packages = ["layered"]

            [[tool.importlinter.contracts]]
            name = "roles see ports only"
            type = "forbidden"
            source_modules = ["layered.role"]
            forbidden_modules = ["layered.edge"]
            """
        )
    )
    result = lint_imports(config, tmp_path)
    if broken:
        assert result.returncode != 0
        assert "layered.role -> layered.edge" in result.stdout
    else:
        assert result.returncode == 0, result.stdout + result.stderr


# -- no cycles -----------------------------------------------------------------------------


def test_no_two_files_import_each_other() -> None:
    assert file_cycles(import_graph(*ROOTS)) == []


def test_a_cycle_through_a_function_level_import_is_found_and_type_checking_imports_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(
        tmp_path,
        "circular",
        {
            "a": "from circular import c\n\n\ndef late():\n    from circular import b\n\n    return b, c\n",
            "b": "from circular.a import late\n",
            "c": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from circular import a\n\n\n"
                "def f(x: 'a.Any') -> None: ...\n"
            ),
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert file_cycles(import_graph("circular")) == [["circular.a", "circular.b"]]


def test_cycles_finds_every_circle_and_self_import() -> None:
    edges = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"], "e": ["a"], "f": []}
    assert cycles(edges) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": ["b"], "b": []}) == []
