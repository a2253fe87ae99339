"""AET's core: the records on the bus, the ports, the roles, the learning code and the wiring.

Layers, from the bottom: the shared, dependency-free modules (``records``: what
travels on the bus; ``ports``: the protocols of the bus and the stores, and the
values that cross them; ``config``; ``metrics``); pure logic (``drift``,
``alert_engine``, ``entities``, ``evaluation``, ``model``, ``learning/``); the
worker loop (``worker``) and the stream roles (``roles/``), which see the bus and
the stores only through the ports. Nothing here talks to Kafka or SQL: ``aet.adapters``
and ``aet.storage`` implement the ports, and only the composition root
(``runtime``) and the command line (``cli/``) import them. ``bench/`` holds the
benchmarks. tests/test_architecture.py checks these rules (pyproject.toml,
``[tool.importlinter]``).
"""
