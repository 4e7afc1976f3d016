"""Uniform random subset: the baseline every selector must beat."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.config import config
from curation.selectors.base import SelectionInputs, Selector


@config("random")
class RandomSelector(Selector):
    seed: int = Field(default=0, description="Seed of the random permutation.")
    name = "random"

    def _select(self, inputs: SelectionInputs, k: int):
        indices = np.random.default_rng(self.seed).permutation(len(inputs.ids))[:k]
        return indices, np.ones(k), np.zeros(k), {}
