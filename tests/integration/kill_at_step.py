"""Scorer processes that SIGKILL themselves at one step of their worker loop (for tests/integration/test_faults.py).

``python -m tests.integration.kill_at_step --batch K SPEC...``, each SPEC being
``STEP,HOME,JOURNAL,INFLIGHT``, imports AET once and then forks one scorer
process per SPEC (so that four kills cost one import of torch, not four). Each
serves the registered champion of ``HOME`` on the journaled memory bus of
``JOURNAL``, exactly as ``aet score --drain`` does, except that on its ``K``-th
batch, at ``STEP``, it writes the ids of the batch in flight to ``INFLIGHT`` and
kills itself with SIGKILL. The step is reached through the real calls of the
loop, wrapped, not replaced: after ``handle`` returns, after the bus's
``flush`` (publish), after the store's ``write``, or just before the consumer's
``commit``. A child that reaches the end of the stream first exits 3. The parent
prints one JSON line: each step and the signal that ended its process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aet.pipeline.config import load_settings
from aet.pipeline.ports import BusRecord
from aet.pipeline.runtime import App

STEPS = ("after_handle", "after_publish", "after_store", "before_commit")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("specs", nargs="+", help="STEP,HOME,JOURNAL,INFLIGHT")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args(argv)
    children: dict[int, str] = {}
    for spec in args.specs:
        step, home, journal, inflight = spec.split(",")
        assert step in STEPS, step
        pid = os.fork()
        if pid == 0:  # the scorer process: it never returns into the parent's code
            try:
                run_scorer(step, Path(home), Path(journal), Path(inflight), args.batch, args.max_batch)
            except BaseException:
                traceback.print_exc()
                os._exit(4)
            os._exit(3)  # the stream ended before the step was reached
        children[pid] = step
    ended: dict[str, int] = {}
    for pid, step in children.items():
        _, status = os.waitpid(pid, 0)
        ended[step] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps(ended))
    return 0


def run_scorer(step: str, home: Path, journal: Path, inflight: Path, kill_at: int, max_batch: int) -> None:
    """Serve the champion until the ``kill_at``-th batch reaches ``step``, then SIGKILL this process."""
    settings = load_settings(
        home=home,
        bus={"journal_dir": journal},
        scorer={"max_batch": max_batch, "max_wait_ms": 20, "hot_swap": False},
    )
    app = App(settings)
    champion = app.registry.champion()
    assert champion is not None
    scorer = app.scorer(app.load_model(champion))
    batch: dict[str, Any] = {"n": 0, "ids": []}

    def die() -> None:
        with open(inflight, "w", encoding="utf-8") as f:
            json.dump(batch["ids"], f)
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def at(at_step: str, call: Callable[..., Any], *, before: bool = False) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            hit = step == at_step and batch["n"] == kill_at
            if hit and before:
                die()
            result = call(*a, **kw)
            if hit:
                die()
            return result

        return wrapped

    handle = scorer.handle

    def counting_handle(records: list[BusRecord]) -> Any:
        batch["n"] += 1
        batch["ids"] = [_id(r) for r in records]
        return handle(records)

    scorer.handle = at("after_handle", counting_handle)
    scorer.bus.flush = at("after_publish", scorer.bus.flush)
    scorer.store.write = at("after_store", scorer.store.write)
    open_consumer = scorer.bus.consumer

    def consumer(group: str, topics: list[str]) -> Any:
        c = open_consumer(group, topics)
        c.commit = at("before_commit", c.commit, before=True)
        return c

    scorer.bus.consumer = consumer
    scorer.run(threading.Event(), drain=True)
    app.close()


def _id(r: BusRecord) -> str:
    return str(json.loads(r.value)["id"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
