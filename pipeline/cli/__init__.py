"""The ``aet`` command line, one module per command group.

main.py is the root command: its global options and the ``add_typer`` calls
that put the groups together, in the order ``aet --help`` lists them. Each
other module owns a ``typer.Typer`` with its commands: run.py (``aet run``),
roles.py (the ``replay`` and ``score`` daemons), alerts.py (``alert``,
``serve``, ``alerts list|follow``), drift.py (``monitor``, ``drift``), train.py
(``train``), models.py (``models ...``), bench.py (``bench ...``) and dlq.py (``dlq ...``); common.py
holds what they share (settings resolution, :func:`~aet.pipeline.cli.common.open_app`,
errors, JSON output, signal handling). A new command goes into the module of its
group; a new group gets its own module, added in main.py. The command line is,
with pipeline/runtime.py, the only part of ``aet.pipeline`` that may import
concrete adapters and stores.
"""

from aet.pipeline.cli.main import app

__all__ = ["app"]
