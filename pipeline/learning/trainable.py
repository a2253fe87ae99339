"""What trains in an adaptation round: ``full``, ``attention`` or ``lora``.

- ``full``: every weight of the classifier.
- ``attention``: the attention projections (query, key, value and the
  attention output projection of every layer) plus the head (the pooler and
  the classifier); everything else is frozen.
- ``lora``: low-rank adapters (peft LoRA) on the same attention projections,
  plus the head. The adapters are merged into the base weights before the
  model is saved (:func:`merge_lora`), so a LoRA-trained version is a plain
  Hugging Face checkpoint like any other and serving needs no peft.

Parameters are always named as in the plain Hugging Face model; under LoRA,
:func:`effective_weights` gives the current value of each trained weight
(base + low-rank update) under that plain name, which is what the elastic
anchor compares with the champion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import get_args

import torch
from transformers import PreTrainedModel

from aet.pipeline.config import TrainingMode

MODES: tuple[str, ...] = get_args(TrainingMode)

# Attention projections across common encoder families: BERT/MiniLM/RoBERTa
# (attention.self.query|key|value, attention.output.dense), DistilBERT
# (attention.q_lin|k_lin|v_lin|out_lin), and *_proj style (q_proj, k_proj, v_proj, o_proj/out_proj).
_ATTENTION = re.compile(
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|attention\.(q_lin|k_lin|v_lin|out_lin)"
    r"|(self_attn|attention|attn)\.(q_proj|k_proj|v_proj|o_proj|out_proj))$"
)


class TrainableError(ValueError):
    """A mode that does not exist or finds nothing to train in this architecture."""


@dataclass(frozen=True)
class Trainable:
    """The parameters an adaptation round optimises, and how many values they hold."""

    mode: str
    parameters: list[torch.nn.Parameter]
    names: list[str]

    @property
    def count(self) -> int:
        return sum(p.numel() for p in self.parameters)


def attention_module_names(net: PreTrainedModel) -> list[str]:
    """Names of the linear attention projections of ``net``."""
    return [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear) and _ATTENTION.search(n)]


def head_parameter_names(net: PreTrainedModel) -> list[str]:
    """The head: every parameter outside the encoder body (classifier), plus the pooler if there is one."""
    prefix = f"{net.base_model_prefix}."
    return [n for n, _ in net.named_parameters() if not n.startswith(prefix) or n.startswith(f"{prefix}pooler.")]


def trained_names(net: PreTrainedModel, mode: str) -> list[str]:
    """Plain names of the weights a round in ``mode`` changes (under LoRA: the adapted weights and the head)."""
    if mode not in MODES:
        raise TrainableError(f"unknown training mode {mode!r}: use one of {', '.join(MODES)}")
    names = [n for n, _ in net.named_parameters()]
    if mode == "full":
        return names
    head = set(head_parameter_names(net))
    suffixes = ("weight", "bias") if mode == "attention" else ("weight",)
    wanted = {f"{m}.{k}" for m in attention_module_names(net) for k in suffixes} | head
    return [n for n in names if n in wanted]


def prepare(
    net: PreTrainedModel, mode: str, *, lora_r: int = 8, lora_alpha: float = 16.0, lora_dropout: float = 0.0
) -> Trainable:
    """Set ``requires_grad`` for ``mode`` (injecting LoRA adapters in place for ``lora``); return what trains."""
    if mode not in MODES:
        raise TrainableError(f"unknown training mode {mode!r}: use one of {', '.join(MODES)}")
    head = set(head_parameter_names(net))
    if mode == "full":
        for p in net.parameters():
            p.requires_grad_(True)
    elif mode == "attention":
        modules = attention_module_names(net)
        if not modules:
            raise TrainableError(f"no attention projections found in {type(net).__name__}")
        wanted = {f"{m}.{k}" for m in modules for k in ("weight", "bias")} | head
        for n, p in net.named_parameters():
            p.requires_grad_(n in wanted)
    else:
        from peft import LoraConfig, inject_adapter_in_model

        modules = attention_module_names(net)
        if not modules:
            raise TrainableError(f"no attention projections found in {type(net).__name__}")
        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,  # type: ignore[arg-type]  # peft annotates an int; the scale alpha / r takes any number
            lora_dropout=lora_dropout,
            target_modules=modules,
            bias="none",
        )
        inject_adapter_in_model(config, net)
        for n, p in net.named_parameters():
            p.requires_grad_(".lora_" in n or n in head)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    return Trainable(mode=mode, parameters=[p for p in net.parameters() if p.requires_grad], names=names)


def is_lora(net: torch.nn.Module) -> bool:
    return any(_is_lora_layer(m) for m in net.modules())


def _is_lora_layer(module: torch.nn.Module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, LoraLayer)


def merge_lora(net: PreTrainedModel) -> PreTrainedModel:
    """Fold every LoRA adapter into its base weight and put the plain layer back, in place.

    Afterwards ``net`` has exactly the parameter names and shapes of the model
    before :func:`prepare` and needs no peft to load or serve.
    """
    for name, module in list(net.named_modules()):
        if not _is_lora_layer(module):
            continue
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, module.get_base_layer())
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def effective_weights(net: torch.nn.Module, names: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(plain name, current value) of every trained weight, differentiable.

    A LoRA layer contributes ``base + B @ A * scale`` under the base layer's
    plain name; a frozen base weight (no adapter) contributes nothing, since it
    cannot have moved. ``names`` restricts the output to those plain names.
    """
    lora_prefixes: set[str] = set()
    for name, module in net.named_modules():
        if not _is_lora_layer(module):
            continue
        lora_prefixes.add(f"{name}.")
        plain = f"{name}.weight"
        if names is not None and plain not in names:
            continue
        base = module.get_base_layer().weight
        delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
        yield plain, base + delta
    for name, p in net.named_parameters():
        if not p.requires_grad or any(name.startswith(pre) for pre in lora_prefixes):
            continue
        if names is None or name in names:
            yield name, p
