"""AET's edges to the outside: bus backends, alert sinks, the analysts' web page.

They implement the ports of :mod:`aet.pipeline.ports` (the in-memory and the Kafka
bus, the sink dispatchers fed by the alert outbox, the page reading the alert
queries) and import from ``aet.pipeline`` only its shared modules: ``records``,
``ports``, ``config`` and ``metrics``. Only the composition root
(pipeline/runtime.py) and the CLI choose and open them.
"""
