"""The extra terms of the AET objective (DESIGN.md, "Elastic retraining"), as loss terms of the one training loop.

    L = CE(y, f_θ(x))                                 task loss on recent + replay examples (training.Trainer)
      + λ_ewc/2 · Σ_i F_i (θ_i − θ*_i)²               :class:`ElasticAnchor`
      + λ_att · KL(A_θ*(x_replay) ‖ A_θ(x_replay))    :class:`AttentionDistillation`

F is a diagonal Fisher (:func:`estimate_fisher`) estimated after each round and
merged online, ``F ← γ·F_old + F_new`` (:func:`merge_fisher`); it is stored
with the model version as ``fisher.safetensors`` (:func:`save_fisher`).

The write-up this project started from defined the attention term as a mean
of squared attention weights minus itself, which is identically zero; the KL
between the champion's and the student's attention maps on replay inputs
replaces it, as DESIGN.md says.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aet.pipeline.learning.loop import Example, StepContext
from aet.pipeline.learning.trainable import effective_weights
from aet.pipeline.model import SentimentModel

log = logging.getLogger(__name__)
FISHER_FILE = "fisher.safetensors"
Tensors = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- Fisher


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
                for (n, _), g in zip(params.items(), grads):
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
    for name in sorted(set(new) | set(old or {})):
        value = new[name].float().clone() if name in new else torch.zeros_like(old[name], dtype=torch.float32)
        if old is not None and name in old:
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


# --------------------------------------------------------------------------- EWC anchor


class ElasticAnchor:
    """``λ/2 · Σ_i F_i (θ_i − θ*_i)²`` over the trained weights, with θ* the champion's weights.

    Only weights that train contribute (a frozen weight cannot move); under
    LoRA the weight's effective value (base + low-rank update) is compared.
    With ``normalize`` the Fisher is divided by its mean over the anchored
    weights, so that λ does not depend on the Fisher's overall scale (which
    varies with the model's confidence); it is still zero exactly at θ = θ*.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        anchor: Mapping[str, torch.Tensor],
        fisher: Mapping[str, torch.Tensor],
        weight: float,
        *,
        normalize: bool = True,
    ) -> None:
        trained = {name for name, _ in effective_weights(net)}
        self.names = sorted(n for n in trained if n in fisher and n in anchor)
        missing = sorted(trained - set(self.names))
        if missing:
            log.info(
                "elastic anchor: %d trained tensors have no Fisher/anchor and are not anchored (e.g. %s)",
                len(missing),
                missing[0],
            )
        device = next(net.parameters()).device
        scale = 1.0
        if normalize and self.names:
            total = sum(float(fisher[n].double().sum()) for n in self.names)
            count = sum(fisher[n].numel() for n in self.names)
            mean = total / count if count else 0.0
            scale = 1.0 / mean if mean > 0 else 1.0
        self.scale = scale
        self.fisher = {n: (fisher[n].float() * scale).to(device) for n in self.names}
        self.anchor = {n: anchor[n].detach().float().to(device) for n in self.names}
        self.weight = weight

    def penalty(self, net: torch.nn.Module) -> torch.Tensor:
        """``Σ_i F_i (θ_i − θ*_i)²`` (without λ/2) at ``net``'s current weights."""
        wanted = set(self.names)
        total = torch.zeros((), device=next(net.parameters()).device)
        for name, value in effective_weights(net, wanted):
            total = total + (self.fisher[name] * (value.float() - self.anchor[name]).pow(2)).sum()
        return total

    def __call__(self, model: SentimentModel, enc: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.weight * self.penalty(model.model)


# --------------------------------------------------------------------------- attention distillation


def attention_kl(
    teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean KL(teacher ‖ student) between attention rows, over layers, heads and real (non-padding) query tokens.

    Each map is (batch, heads, query, key) with rows that are distributions over
    keys. Zero exactly when the maps are equal; positive otherwise.
    """
    if len(teacher) != len(student) or not teacher:
        raise ValueError(f"attention maps of {len(teacher)} and {len(student)} layers cannot be compared")
    mask = attention_mask.to(torch.float32)[:, None, :]  # (batch, 1, query)
    total = torch.zeros((), device=student[0].device)
    for t, s in zip(teacher, student):
        p, q = t.float(), s.float()
        kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(1e-12))).sum(-1)  # (batch, heads, query)
        total = total + (kl * mask).sum() / (mask.sum() * kl.shape[1]).clamp_min(1.0)
    return total / len(teacher)


def use_eager_attention(net: torch.nn.Module) -> str | None:
    """Switch a model to the eager attention implementation (which can return attention maps); returns the old one."""
    config = getattr(net, "config", None)
    old = getattr(config, "_attn_implementation", None)
    if hasattr(net, "set_attn_implementation"):
        net.set_attn_implementation("eager")
    elif config is not None:  # older transformers: the SDPA classes fall back to eager for output_attentions
        config._attn_implementation = "eager"
    return old


def restore_attention(net: torch.nn.Module, implementation: str | None) -> None:
    if implementation and implementation != "eager" and hasattr(net, "set_attn_implementation"):
        try:
            net.set_attn_implementation(implementation)
        except Exception as exc:  # noqa: BLE001 - eager keeps working; only speed is lost
            log.warning("cannot restore attention implementation %s: %s", implementation, exc)


class AttentionDistillation:
    """``λ · KL(A_θ*(x) ‖ A_θ(x))`` on replay inputs x.

    By default x are the replay rows of each training batch (replay is mixed
    into the task loss, so the student's forward pass is shared). With
    ``own_batch`` > 0 the term instead draws that many replay examples per
    step and runs the student on them itself, so that distillation can be
    used without training the task loss on replay (the ``att`` ablation).

    The champion (``teacher``, frozen, eval mode) and the student must return
    attention maps: both are switched to eager attention by the caller
    (:func:`use_eager_attention`), and the student's attention-probability
    dropout is zeroed (:func:`aet.pipeline.learning.trainable.disable_attention_dropout`).
    A batch without replay rows contributes zero.
    """

    wants_context = True

    def __init__(
        self, teacher: torch.nn.Module, replay: Collection[Example], weight: float, *, own_batch: int = 0, seed: int = 0
    ) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.replay = set(replay)
        self.pool = sorted(self.replay, key=lambda e: (e.id, e.text))
        self.weight = weight
        self.own_batch = own_batch
        self.rng = random.Random(seed)
        self.needs_attentions = own_batch == 0

    def rows(self, batch: Iterable[Example]) -> list[int]:
        return [i for i, e in enumerate(batch) if e in self.replay]

    def __call__(
        self, model: SentimentModel, enc: dict[str, torch.Tensor], labels: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        if self.own_batch:
            return self._own_batch(model)
        rows = self.rows(context.batch)
        student = getattr(context.outputs, "attentions", None)
        if student is None:
            raise RuntimeError("the student returned no attention maps: use eager attention for distillation")
        if not rows:
            return torch.zeros((), device=context.outputs.logits.device)
        index = torch.tensor(rows, device=enc["input_ids"].device)
        sub = {k: v.index_select(0, index) for k, v in enc.items()}
        with torch.no_grad():
            teacher = self.teacher(**sub, output_attentions=True).attentions
        picked = [a.index_select(0, index) for a in student]
        return self.weight * attention_kl(teacher, picked, sub["attention_mask"])

    def _own_batch(self, model: SentimentModel) -> torch.Tensor:
        if not self.pool:
            return torch.zeros((), device=model.device)
        batch = self.rng.sample(self.pool, min(self.own_batch, len(self.pool)))
        sub = model.encode([e.text for e in batch])
        student = model.model(**sub, output_attentions=True).attentions
        with torch.no_grad():
            teacher = self.teacher(**sub, output_attentions=True).attentions
        return self.weight * attention_kl(teacher, student, sub["attention_mask"])
