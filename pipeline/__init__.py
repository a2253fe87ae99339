"""AET domain and workers: records, model, scorer, replay, runtime wiring and CLI.

Nothing in this package talks to Kafka or SQL directly; the edges live in
``adapters`` and ``storage``.
"""
