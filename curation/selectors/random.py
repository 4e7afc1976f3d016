"""Uniform random subset: the baseline every selector must beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.selectors.base import SelectionInputs, Selector


@dataclass(frozen=True)
class RandomSelector(Selector):
    seed: int = 0
    name = "random"

    def _select(self, inputs: SelectionInputs, k: int):
        indices = np.random.default_rng(self.seed).permutation(len(inputs.ids))[:k]
        return indices, np.ones(k), np.zeros(k), {}
