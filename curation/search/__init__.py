"""Inner-product search backends, by name: which rows have the largest inner product with a
query. ``SEARCH_BACKENDS`` is the registry (a new backend is one module registered here);
``search_backend(name)`` looks one up.

- ``exact``: every row scored (faiss ``IndexFlatIP``; pursuit uses its own exact pass).
- ``faiss``: a subspace-split index (``split``): int8 coordinates in the rows' top 32
  directions plus 4-bit product-quantizer codes (fast scan) of the rest of each row, 96 bytes
  a 1024-wide row (1/21 of a float16 store); a query returns the best rows by each part.

Callers re-score the candidates exactly: the index only decides which rows are looked at.
"""

from __future__ import annotations

from curation.search.base import SearchBackend, SearchIndex
from curation.search.exact import ExactSearch
from curation.search.split import SplitSearch

SEARCH_BACKENDS: dict[str, type[SearchBackend]] = {
    cls.name: cls for cls in (ExactSearch, SplitSearch)
}


def search_backend(name: str) -> SearchBackend:
    """The backend registered as ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in SEARCH_BACKENDS:
        raise ValueError(f"search must be one of {sorted(SEARCH_BACKENDS)}, got {name!r}")
    return SEARCH_BACKENDS[name]()


__all__ = ["SEARCH_BACKENDS", "SearchBackend", "SearchIndex", "search_backend"]
