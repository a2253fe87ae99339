"""AET's persistence: SQLAlchemy engine and tables, Alembic migrations, model registry, artifacts, the stores.

Each class implements ports of :mod:`aet.pipeline.ports`: the results store the
workers write (``store``), the model registry (``registry``), the artifact
directory (``artifacts``), the trainer's and the reservoir's tables
(``training_store``), the drift monitor's ledger (``drift_store``) and the alert
side (``alert_store``); ``lineage`` answers ``aet models show``. Storage imports
from ``aet.pipeline`` only its shared modules (``records``, ``ports``, ``config``,
``metrics``); only the composition root (pipeline/runtime.py) and the CLI open it.
"""
