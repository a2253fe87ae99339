"""The diagonal Fisher of the elastic anchor: estimating it, merging it across rounds, and storing it with a model.

``F_i = E[(∂ log p(y|x) / ∂θ_i)²]`` says how much the model's predictions
depend on weight i. It is estimated after each round on that round's
training examples and merged online, ``F ← γ·F_old + F_new``
(:func:`merge_fisher`), so that older rounds keep a decaying say; it is
stored with the model version as ``fisher.safetensors`` (:func:`save_fisher`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aet.pipeline.learning.examples import Example
from aet.pipeline.model import SentimentModel

FISHER_FILE = "fisher.safetensors"
Tensors = dict[str, torch.Tensor]


def estimate_fisher(
    model: SentimentModel,
    examples: Sequence[Example],
    *,
    samples: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    names: Collection[str] | None = None,
    progress: bool = False,
) -> Tensors:
    """Diagonal empirical Fisher of the parameters (all, or those in ``names``) at the model's current weights.

    ``F_i = mean over examples of (∂ log p(y|x) / ∂θ_i)²``, with the examples'
    own labels, dropout off. With ``batch_size=1`` this is exact; a larger batch
    squares the batch-mean gradient times the batch size (a cheaper, slightly
    low estimate that is exact when the examples' gradients agree). At most
    ``samples`` examples are used, drawn with ``seed``. Returns float32 CPU
    tensors keyed by parameter name.
    """
    if not examples:
        raise ValueError("cannot estimate a Fisher without examples")
    chosen = list(examples)
    if len(chosen) > samples:
        chosen = random.Random(seed).sample(chosen, samples)
    net = model.model
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    wanted = None if names is None else set(names)
    params = {n: p for n, p in net.named_parameters() if p.is_floating_point() and (wanted is None or n in wanted)}
    if not params:
        raise ValueError("no parameters to estimate a Fisher for")
    was_training = net.training
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
    device = model.device
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    net.eval()
    try:
        for n, p in net.named_parameters():
            p.requires_grad_(n in params)  # gradients only where they are wanted: a cheaper backward
            p.grad = None
        with torch.enable_grad():
            starts = range(0, len(chosen), batch_size)
            if progress:
                from tqdm import tqdm

                starts = tqdm(starts, desc="fisher", unit="batch")
            for start in starts:
                batch = chosen[start : start + batch_size]
                enc = model.encode([e.text for e in batch])
                labels = torch.tensor([e.label for e in batch], device=device)
                with autocast:
                    logits = net(**enc).logits.float()
                loss = torch.nn.functional.cross_entropy(logits, labels)  # mean of -log p(y|x)
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for (n, _), g in zip(params.items(), grads, strict=True):
                    if g is not None:
                        fisher[n] += g.float().pow(2) * len(batch)
    finally:
        for n, p in net.named_parameters():
            p.requires_grad_(flags[n])
        net.train(was_training)
    return {n: (f / len(chosen)).cpu() for n, f in fisher.items()}


def merge_fisher(old: Mapping[str, torch.Tensor] | None, new: Mapping[str, torch.Tensor], gamma: float) -> Tensors:
    """The online merge ``F ← γ·F_old + F_new``, per parameter.

    A parameter present only in ``new`` keeps its new value (``F_old`` = 0 for
    it); one present only in ``old`` decays to ``γ·F_old``.
    """
    merged: Tensors = {}
    old = old or {}
    for name in sorted(set(new) | set(old)):
        value = new[name].float().clone() if name in new else torch.zeros_like(old[name], dtype=torch.float32)
        if name in old:
            if old[name].shape != value.shape:
                raise ValueError(f"Fisher of {name} has shape {tuple(old[name].shape)}, new one {tuple(value.shape)}")
            value = gamma * old[name].float() + value
        merged[name] = value.contiguous()
    return merged


def save_fisher(fisher: Mapping[str, torch.Tensor], directory: Path, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``fisher.safetensors`` (float32, CPU) into a model directory; ``info`` goes into its metadata."""
    path = Path(directory) / FISHER_FILE
    save_file(
        {n: t.detach().to("cpu", torch.float32).contiguous() for n, t in fisher.items()},
        str(path),
        metadata={"aet": json.dumps(dict(info or {}), sort_keys=True, default=str)},
    )
    return path


def load_fisher(directory: Path) -> Tensors | None:
    """The Fisher stored with a model version, or ``None`` when it has none (e.g. a bootstrapped champion)."""
    path = Path(directory) / FISHER_FILE
    if not path.is_file():
        return None
    return load_file(str(path))


def fisher_info(directory: Path) -> dict[str, Any]:
    """The metadata saved with a model's Fisher (rounds merged, γ, samples), or ``{}``."""
    path = Path(directory) / FISHER_FILE
    if not path.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("aet", "{}"))
