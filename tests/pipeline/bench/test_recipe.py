"""The recipe benchmark refuses what it cannot run before loading anything."""

from __future__ import annotations

import pytest

from aet.pipeline.bench.recipe import VARIANTS, recipe_benchmark
from aet.pipeline.config import FitSettings


def test_every_variant_is_a_valid_fit() -> None:
    for changes in VARIANTS.values():
        FitSettings().model_copy(update=changes).model_validate(FitSettings().model_copy(update=changes).model_dump())


def test_an_unknown_variant_is_refused_with_the_known_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown variants \\['huge-lr'\\]"):
        recipe_benchmark(base=FitSettings(), variants=["huge-lr"], data_dir=tmp_path, out=tmp_path)
