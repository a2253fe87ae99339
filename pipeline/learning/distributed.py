"""``aet train`` alone or under ``torchrun`` (data-parallel, PyTorch elastic launch).

With ``WORLD_SIZE`` > 1 (set by torchrun) every process joins one process
group (NCCL on GPUs, gloo on CPUs). Rank 0 is the trainer role: it consumes
``aet.control``, builds a round's data, and broadcasts it (examples, splits,
champion version, settings) before training; every other rank loads the same
champion on its own device and trains its share of each batch through
DistributedDataParallel inside the one training loop
(:class:`aet.pipeline.learning.loop.TrainingLoop`). Only rank 0 writes the artifact,
registers the challenger and publishes. When rank 0 stops it broadcasts a
stop message and the others exit.

A rank that fails takes the group down; torchrun (``--max-restarts``)
starts it again, and the uncommitted request is delivered again.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from aet.pipeline.runtime import App

log = logging.getLogger(__name__)
STOP = "stop"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _init(app: App) -> tuple[int, int]:
    """Join the process group; pin this rank to its GPU when there are GPUs."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (app.settings.retrain.device or app.settings.model.device) != "cpu"
    if cuda:
        torch.cuda.set_device(local)
        app.settings.retrain.device = f"cuda:{local}"
    else:
        app.settings.retrain.device = "cpu"
    # Followers wait in a broadcast between rounds, possibly for hours: a long timeout.
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(days=7))
    return dist.get_rank(), dist.get_world_size()


def _broadcast(message: Any) -> Any:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_trainer(app: App, stop: threading.Event, *, drain: bool = False, progress: bool = True) -> int:
    """Run the trainer role in this process, data-parallel with the other ranks under torchrun."""
    if world_size() <= 1:
        return app.trainer(progress=progress).run(stop, drain=drain)
    import torch.distributed as dist

    rank, world = _init(app)
    log.info("trainer rank %d of %d on %s", rank, world, app.settings.retrain.device)
    role = app.trainer(progress=progress and rank == 0, follower=rank != 0)
    try:
        if rank == 0:
            role.retry_in_process = False  # a crash must restart the whole group (torchrun --max-restarts)
            role.before_training = lambda request_id, data: _broadcast((request_id, data))
            n = role.run(stop, drain=drain)
            _broadcast(STOP)
            return n
        rounds = 0
        while True:
            message = _broadcast(None)
            if message == STOP:
                return rounds
            request_id, data = message
            log.info("rank %d: training its share of request %s", rank, request_id)
            role.follow(data)
            rounds += 1
    finally:
        dist.destroy_process_group()
