"""Selectors behind one interface; ``make_selector(name, **params)`` builds one by name.

- ``random``: uniform random subset (baseline).
- ``less``: top-k gradient cosine similarity to the target examples (LESS baseline).
- ``el2n``: loss-based: the examples the proxy finds hardest (EL2N or cross-entropy).
- ``gtp``: Gradient Trajectory Pursuit, joint non-negative pursuit (the flagship).
"""

from __future__ import annotations

import dataclasses

from curation.errors import CurationError
from curation.selectors.base import Selection, SelectionInputs, Selector, resolve_budget
from curation.selectors.el2n import El2nSelector
from curation.selectors.gtp import GTPSelector
from curation.selectors.less import LessSelector
from curation.selectors.random import RandomSelector

SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls for cls in (RandomSelector, LessSelector, El2nSelector, GTPSelector)
}


def make_selector(name: str, **params) -> Selector:
    """The selector registered as ``name`` with ``params``; unknown names or fields fail."""
    if name not in SELECTORS:
        raise CurationError(f"unknown selector {name!r}; expected one of {sorted(SELECTORS)}")
    cls = SELECTORS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise CurationError(f"selector {name!r} has no option(s) {unknown}; known: {sorted(fields)}")
    return cls(**params)


def takes_seed(name: str) -> bool:
    """Whether selector ``name`` has a ``seed`` option (its picks are random draws)."""
    return name in SELECTORS and any(f.name == "seed" for f in dataclasses.fields(SELECTORS[name]))


__all__ = ["SELECTORS", "Selection", "SelectionInputs", "Selector", "make_selector",
           "resolve_budget", "takes_seed"]
