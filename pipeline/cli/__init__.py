"""The ``aet`` command line."""

from aet.pipeline.cli.main import app

__all__ = ["app"]
