"""AET's HTTP surface (``aet serve``): the analysts' page, its event stream, the read and ingest APIs.

:class:`WebServer` is the whole of it on a thread; :class:`AlertFeed` is also what
``aet alerts follow`` reads.
"""

from aet.adapters.web.app import WebServer, build_app
from aet.adapters.web.feed import AlertFeed

__all__ = ["AlertFeed", "WebServer", "build_app"]
