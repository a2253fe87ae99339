"""The stream roles: each one is one worker loop with one responsibility, from its input topics to its outputs.

A role subclasses :class:`aet.pipeline.worker.Worker` and implements only
``handle`` (a batch of bus records in, :class:`~aet.pipeline.worker.Outputs` out);
the loop around it publishes, stores and only then commits, so a crash re-delivers
the batch and its keyed outputs overwrite. The roles and their topics:

- ``replay.py``: a recorded stream file → ``aet.messages`` (and delayed labels → ``aet.labels``);
- ``scorer.py``: ``aet.messages`` → ``aet.scored``, with ``hotswap.py`` swapping in a
  promoted model between two batches;
- ``label_recorder.py``: ``aet.labels`` → the labels table;
- ``monitor.py``: ``aet.scored`` + ``aet.labels`` → drift events and retrain requests on
  ``aet.control`` (``monitor_embedding.py``: the model it embeds with);
- ``trainer.py``: retrain requests on ``aet.control`` → challengers, gate decisions;
- ``alerts.py``: ``aet.scored`` → ``aet.alerts`` (the statistics are :mod:`aet.pipeline.alert_engine`).

A role receives the ports it uses (:mod:`aet.pipeline.ports`: the bus, a store, the
registry ...), never the concrete backends nor the whole application: the composition
root (pipeline/runtime.py) builds it. A new role is a module here with its
``Worker`` subclass, a factory method on :class:`aet.pipeline.runtime.App`, and a
test in tests/pipeline/roles/; its pure logic (no I/O) belongs in a module of its own
at the top of the package, as the drift detectors and the alert engine are.
"""
