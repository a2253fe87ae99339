"""The benchmarks behind ``aet bench``: one module per benchmark, each returning and writing a JSON report.

score.py, bus.py, swap.py, alerts.py, drift.py, adapt.py (``adapt`` and
``gpu-train``) and stream.py (the whole loop on a scenario of real corpora,
with scenario.py and strategies.py) measure; report.py writes every report (JSON,
and a PNG when matplotlib is installed), data.py and corpora.py find their
messages and labeled corpora, and scratch.py gives a benchmark a throwaway
installation through the composition root. A new benchmark is a module here
with a ``<name>_benchmark`` function that returns its report and writes it with
:func:`~aet.pipeline.bench.report.write_report`, plus a command in
pipeline/cli/bench.py. Benchmarks see buses and stores only through
``aet.pipeline.runtime.App`` or what the command line hands them, never Kafka or
SQL directly.
"""
