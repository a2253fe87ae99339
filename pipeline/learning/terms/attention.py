"""Attention distillation: ``λ · KL(A_θ*(x) ‖ A_θ(x))``, the champion's attention maps as a target on rehearsal inputs.

The write-up this project started from defined the attention term as a mean
of squared attention weights minus itself, which is identically zero; the KL
between the champion's and the student's attention maps on rehearsal inputs
replaces it (docs/architecture.md, "Elastic retraining: the AET objective").

Attention maps come only from the eager attention implementation, and in
training mode they are taken after the attention-probability dropout: the
term's ``setup`` switches both models to eager attention and zeroes the
student's attention dropout, and ``teardown`` puts both back.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Collection, Iterable, Sequence

import torch

from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.terms import LossTerm, Step
from aet.pipeline.model import SentimentModel

log = logging.getLogger(__name__)

# Attention-probability dropout modules across encoder families (BERT/MiniLM/RoBERTa, DistilBERT, *_proj style).
_ATTENTION_DROPOUT = re.compile(r"(attention\.self\.dropout|attention\.dropout|self_attn\.dropout|attn_dropout)$")


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
    for t, s in zip(teacher, student, strict=True):
        p, q = t.float(), s.float()
        kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(1e-12))).sum(-1)  # (batch, heads, query)
        total = total + (kl * mask).sum() / (mask.sum() * kl.shape[1]).clamp_min(1.0)
    return total / len(teacher)


def use_eager_attention(net: torch.nn.Module) -> str | None:
    """Switch a model to the eager attention implementation (which can return attention maps); returns the old one."""
    config = getattr(net, "config", None)
    old = getattr(config, "_attn_implementation", None)
    switch = getattr(net, "set_attn_implementation", None)
    if switch is not None:
        switch("eager")
    elif config is not None:  # older transformers: the SDPA classes fall back to eager for output_attentions
        config._attn_implementation = "eager"
    return old


def restore_attention(net: torch.nn.Module, implementation: str | None) -> None:
    """Put back the attention implementation :func:`use_eager_attention` replaced."""
    switch = getattr(net, "set_attn_implementation", None)
    if implementation and implementation != "eager" and switch is not None:
        try:
            switch(implementation)
        except Exception as exc:  # noqa: BLE001 - eager keeps working; only speed is lost
            log.warning("cannot restore attention implementation %s: %s", implementation, exc)


def disable_attention_dropout(net: torch.nn.Module) -> list[tuple[torch.nn.Dropout, float]]:
    """Zero the dropout on attention probabilities, so the maps a training forward returns are distributions.

    Returns what was changed, for :func:`restore_dropout`; the model's config is left alone.
    """
    changed = []
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Dropout) and _ATTENTION_DROPOUT.search(name):
            changed.append((module, module.p))
            module.p = 0.0
    return changed


def restore_dropout(changed: list[tuple[torch.nn.Dropout, float]]) -> None:
    """Put back the dropout rates :func:`disable_attention_dropout` zeroed."""
    for module, p in changed:
        module.p = p


class AttentionDistillation(LossTerm):
    """``λ · KL(A_θ*(x) ‖ A_θ(x))`` on rehearsal inputs x.

    By default x are the rehearsal rows of each training batch (rehearsal is
    mixed into the task loss, so the student's forward pass is shared). With
    ``own_batch`` > 0 the term instead draws that many rehearsal examples per
    step and runs the student on them itself, so that distillation can be
    used without training the task loss on rehearsal (the ``att`` ablation).

    The champion (``teacher``) is frozen and in eval mode while the term is
    set up. A batch without rehearsal rows contributes zero.
    """

    name = "att"

    def __init__(
        self,
        teacher: torch.nn.Module,
        rehearsal: Collection[Example],
        weight: float,
        *,
        own_batch: int = 0,
        seed: int = 0,
    ) -> None:
        self.teacher = teacher
        self.rehearsal = set(rehearsal)
        self.pool = sorted(self.rehearsal, key=lambda e: (e.id, e.text))
        self.weight = weight
        self.own_batch = own_batch
        self.rng = random.Random(seed)
        self.needs_attentions = own_batch == 0
        self._undo: list[Callable[[], None]] = []

    def setup(self, student: SentimentModel) -> None:
        """Freeze the teacher; both models on eager attention; the student's attention dropout zeroed."""
        teacher, flags, training = (
            self.teacher,
            [p.requires_grad for p in self.teacher.parameters()],
            self.teacher.training,
        )
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher_impl, student_impl = use_eager_attention(teacher), use_eager_attention(student.model)
        dropped = disable_attention_dropout(student.model)

        def undo() -> None:
            restore_attention(teacher, teacher_impl)
            restore_attention(student.model, student_impl)
            restore_dropout(dropped)
            for p, flag in zip(teacher.parameters(), flags, strict=True):
                p.requires_grad_(flag)
            teacher.train(training)

        self._undo.append(undo)

    def teardown(self) -> None:
        """Both models back on their attention implementation and dropout; the teacher as it was."""
        while self._undo:
            self._undo.pop()()

    def rows(self, batch: Iterable[Example]) -> list[int]:
        """Row indices of the rehearsal examples in ``batch``."""
        return [i for i, e in enumerate(batch) if e in self.rehearsal]

    def __call__(self, step: Step) -> torch.Tensor:
        if self.own_batch:
            return self._own_batch(step.model)
        rows = self.rows(step.examples)
        student = getattr(step.outputs, "attentions", None)
        if student is None:
            raise RuntimeError("the student returned no attention maps: use eager attention for distillation")
        if not rows:
            return torch.zeros((), device=step.outputs.logits.device)
        index = torch.tensor(rows, device=step.encoded["input_ids"].device)
        sub = {k: v.index_select(0, index) for k, v in step.encoded.items()}
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
