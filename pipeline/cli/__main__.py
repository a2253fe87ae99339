"""``python -m aet.pipeline.cli``: the ``aet`` command (used by tests and ``torchrun``)."""

from aet.pipeline.cli.main import app

app()
