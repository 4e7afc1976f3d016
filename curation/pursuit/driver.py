"""The pursuit loop: ``pursuit``, the step loop ``pursue`` it shares with ``sharded_pursuit``,
argument checks, and ``correlations``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from curation.pursuit.atoms import Atoms, AtomSource
from curation.pursuit.kernels import pick, score_block
from curation.pursuit.nnls import REJECT, add_and_refit, compact, residual
from curation.pursuit.passes import PassResult, atom_norms, inverse_norms, pass_result, score_all
from curation.pursuit.row_cache import RowCache

if TYPE_CHECKING:
    from curation.search import SearchIndex

# Relative (to ||target||) dual tolerance for re-admitting an atom inside one NNLS refit.
_DUAL_TOL = 1e-10
# Atoms kept as candidates between full passes when ``refresh > 1``: re-scoring them costs
# 2048 * d per step, a few percent of a pass at the pool sizes where skipping passes matters.
_CANDIDATES = 2048
# Rows each list of an index returns per pursuit step (``curation.search.split``: two lists),
# re-scored exactly. On gradient-like and clustered data (20k x 256, 50k x 1024) 256 left the
# residual up to 1.35x exact pursuit's (758x where exact reconstructs to 1e-4), 1024 at
# 0.88-1.11x (docs/scaling.md); reading and scoring 2048 rows of width 1024 costs milliseconds.
_SEARCH_CANDIDATES = 1024
# Calibration of index search: an exact pass also runs on step 1 and then after 1, 2, 4, ...
# steps, at most this many steps apart, and on the step after a miss that grew the candidates
# (at k = 600 on 1M x 1024: 13 passes instead of the 15 of steps 1, 2, 4, ... plus every 64th);
# the candidates count as having missed when
# their best scores below this fraction of the exact best.
_CHECK_EVERY = 256
_CHECK_RATIO = 0.999
# The most rows per list calibration grows to: re-scoring 2 x 8192 rows of width 1024 reads
# 32 MiB a step, 1/64 of an exact pass over 1M rows (growth up to n made it slower than exact).
_MAX_CANDIDATES = 8192

# ``full_pass(r, excluded, banned, signed, m)``: one pass scoring every atom against ``r``.
FullPass = Callable[[np.ndarray, np.ndarray, np.ndarray, bool, int], PassResult]


@dataclass(frozen=True)
class PursuitResult:
    """Selected atoms in pick order, their weights, residual norms and pick-time scores.

    ``residual_norms[i]`` is ``||target - A_S^T w||`` after the step that picked
    ``indices[i]``; the last entry is the final residual. ``correlations[i]`` is the selection
    score of ``indices[i]`` when it was (last) picked.
    """

    indices: np.ndarray  # int64 atom rows, in order of (latest) pick; length <= k
    weights: np.ndarray  # float64 weight of each atom (> 0 when nonnegative)
    residual_norms: np.ndarray  # float64, one per selected atom, non-increasing
    correlations: np.ndarray  # float64 selection score of each atom when picked
    passes: int = 0  # full passes over the atoms (one per step when ``refresh=1``)
    # With index search: ``candidates`` per list at the end, ``exact_passes`` run, ``steps``.
    search_info: dict = field(default_factory=dict)


def pursuit(atoms: Atoms, target: np.ndarray, k: int, *, nonnegative: bool = True,
            tol: float = 1e-6, block_rows: int = 65536, normalize: bool = True,
            column_scale: np.ndarray | None = None, refresh: int = 1, search: str = "exact",
            index: SearchIndex | None = None, candidates: int = _SEARCH_CANDIDATES,
            exclude: np.ndarray | None = None) -> PursuitResult:
    """Greedily pick at most ``k`` atoms whose (non-negative) combination reconstructs target.

    ``atoms`` is (n, d) float16/float32/float64, possibly an ``np.memmap``, or a list of such row
    blocks (arrays or ``MappedRows``) of one dtype, read as their concatenation; it is read in
    blocks of ``block_rows`` rows and never copied whole. ``target`` is (d,), or (t, d) for t
    targets matched jointly: it is flattened row-major, so ``atoms`` rows must then be the
    matching length-``t*d`` concatenations. ``column_scale`` (d,) makes the atoms
    ``atoms * column_scale`` (e.g. a weight per checkpoint block) without forming the product.
    ``exclude`` (bool per atom) marks rows never to pick: a pursuit over a subset of the rows
    that keeps the rows' numbers (and an index built over all of them) instead of slicing them.

    ``refresh=1`` scores every atom at every step: the exact greedy rule. ``refresh=R > 1``
    trades exactness for speed (lazy greedy): a full pass keeps the 2048 best-scoring atoms as
    candidates, the next steps re-score only those, and a full pass comes again after ``R``
    steps or as soon as the best candidate no longer beats the best score left out at the last
    pass. A step then picks the exact argmax unless a left-out atom's score rose past that mark
    in the meantime. Exact when n <= 2048. See the ``curation.pursuit`` docstring for the algorithm.

    ``search`` names a ``curation.search`` backend. ``"exact"`` is the full pass above. Any other
    (``"faiss"``) replaces the pass: the index returns the ``candidates`` rows with the largest
    inner product with the residual by each of its lists (``index``: one built for these atoms,
    e.g. a datastore's ``curation.datastore.index.store_index``; built here if None), those
    are read and re-scored exactly, and the best admissible one is picked; only when none of
    them beats the stop threshold does one exact pass decide. A few steps (1, 2, 4, ..., at most
    256 apart) also run an exact pass, which decides them and doubles ``candidates`` when the
    index missed the best row (``searched_pass``). Approximate (a row the index ranks low is
    missed between checks); the refit is unchanged. ``refresh`` must then be 1.
    """
    from curation.search import search_backend  # faiss loads only when asked for

    src, b, scale = validate(atoms, target, k, tol, block_rows, column_scale, refresh)
    off = excluded_rows(exclude, src.n)
    backend = search_backend(search)
    sq = np.ones(src.d) if scale is None else scale * scale
    if backend.exhaustive:
        index = None
    else:
        check_search(search, refresh, candidates)
        index = backend.build(src, normalize=True) if index is None else index
        if (index.n, index.d) != (src.n, src.d):
            raise ValueError(f"index shape {(index.n, index.d)} does not match atoms shape "
                             f"{(src.n, src.d)}")
    # The index records the rows' norms; a column scale changes them, so they are re-read.
    norms = index.norms.astype(np.float64) if index is not None and scale is None \
        else atom_norms(src, sq, block_rows)
    inv_norms = inverse_norms(norms, normalize)
    scores = np.empty(0)
    counts: dict = {}

    def full_pass(rs, excluded, banned, signed, m):
        nonlocal scores
        if len(scores) != src.n:  # allocated on the first exact pass only
            scores = np.empty(src.n)
        return pass_result(score_all(src, rs, inv_norms, block_rows, scores), excluded, banned,
                           signed, m)

    if index is not None:
        threshold = stop_threshold(tol, b, normalize, norms)
        full_pass = searched_pass(index_search(src, index, inv_norms), src.n, int(candidates),
                                  threshold, full_pass, counts)
    result = pursue(src, inv_norms, float(norms.max()), full_pass, b, int(k), nonnegative, tol,
                    normalize, scale, refresh, off)
    return replace(result, search_info=counts) if counts else result


# ``search_best(rs, excluded, signed, m)``: the best admissible row among an index's ``m``
# candidates per list, re-scored exactly; None when no candidate is admissible.
SearchBest = Callable[[np.ndarray, np.ndarray, bool, int], "PassResult | None"]


def index_search(src: AtomSource, index: SearchIndex, inv_norms: np.ndarray) -> SearchBest:
    """A ``SearchBest`` over ``index``'s candidates, re-scored from ``src``'s rows (through a
    ``RowCache``: consecutive steps share most of their candidates)."""
    cache = RowCache(src)

    def search_best(rs, excluded, signed, m):
        queries = np.stack([rs, -rs]) if signed else rs[None]
        found = index.candidates(queries, m)
        cand = np.unique(found[found >= 0])
        cand = cand[~excluded[cand]]
        if not len(cand):
            return None
        # The exact pass's own arithmetic: the same scores it would give these rows.
        cand_scores = cache.scores(cand, rs, inv_norms[cand])
        jc = pick(cand_scores, np.zeros(len(cand), np.bool_), signed)
        return PassResult(int(cand[jc]), float(cand_scores[jc]))

    return search_best


def searched_pass(search_best: SearchBest, n: int, m: int, threshold: float,
                  exact_pass: FullPass, counts: dict) -> FullPass:
    """A ``FullPass`` that takes the best of an index's candidates (``search_best``, ``m`` per
    list, over ``n`` rows) and falls back to ``exact_pass`` when no admissible candidate scores
    above ``threshold``.

    Calibrated as it goes: on check steps one exact pass runs too and decides the step; when
    the candidates' best scored below ``_CHECK_RATIO`` of the exact best, the index missed the
    best row, ``m`` doubles (up to ``_MAX_CANDIDATES``) and the next step is checked again;
    otherwise the gap to the next check doubles (up to ``_CHECK_EVERY``): steps 1, 2, 4, 8, ...
    A miss at the most candidates is taken as it is: checking more often could not make the
    index better, only the search as slow as exact. ``counts`` gets the final ``m``, the steps and the
    exact passes run.
    """
    counts.update(candidates=min(m, n), exact_passes=0, steps=0)
    schedule = {"next": 1, "gap": 1}

    def exact(rs, excluded, banned, signed):
        counts["exact_passes"] += 1
        return exact_pass(rs, excluded, banned, signed, 0)

    def full_pass(rs, excluded, banned, signed, _m):
        counts["steps"] += 1
        step, m = counts["steps"], counts["candidates"]
        best = search_best(rs, excluded, signed, m)
        key = -np.inf if best is None else abs(best.score) if signed else best.score
        if step >= schedule["next"]:
            result = exact(rs, excluded, banned, signed)
            true_key = abs(result.score) if signed else result.score
            if result.j >= 0 and key < _CHECK_RATIO * true_key:
                counts["candidates"] = min(2 * m, max(m, _MAX_CANDIDATES))
            if counts["candidates"] > m:  # more candidates: are they enough? Check next step
                schedule["next"] = step + 1
            else:
                schedule["next"] = step + schedule["gap"]
                schedule["gap"] = min(2 * schedule["gap"], _CHECK_EVERY)
            return result
        if key > threshold:
            return best
        return exact(rs, excluded, banned, signed)

    return full_pass


def pursue(src: AtomSource, inv_norms: np.ndarray, max_norm: float, full_pass: FullPass,
           b: np.ndarray, k: int, nonnegative: bool, tol: float, normalize: bool,
           scale: np.ndarray | None, refresh: int, off: np.ndarray | None = None
           ) -> PursuitResult:
    """The pursuit loop over validated arguments; ``full_pass`` scores all atoms, ``off``
    (bool per atom, or None) marks atoms never to pick.

    Row data (the picked atom, lazy candidates) is read from ``src`` here; only the full passes
    are delegated, so the same loop runs over one array or over shards on a cluster.
    """
    d = src.d
    half = src.half
    signed = not nonnegative
    positive = inv_norms > 0
    b_norm = float(np.linalg.norm(b))
    threshold = tol * b_norm * (1.0 if normalize else max_norm)
    excluded = ~positive  # zero atoms can never help
    if off is not None:
        excluded |= off
    banned = excluded.copy()

    X = np.zeros((k, d))
    G = np.zeros((k, k))
    h = np.zeros(k)
    w = np.zeros(k)
    L = np.zeros((k, k))
    perm = np.zeros(k, np.int64)
    in_p = np.zeros(k, np.uint8)
    slot_atom = np.zeros(k, np.int64)
    slot_score = np.zeros(k)
    slot_rnorm = np.zeros(k)
    sizes = np.zeros(2, np.int64)  # q (slots), npas (passive slots)
    r = b.copy()
    r_norm = b_norm
    dual_tol = _DUAL_TOL * b_norm
    max_inner = 3 * k + 30
    cand = cand_rows = cand_inv = None  # candidates between full passes: rows, data, 1/norms
    left_out = -np.inf  # best key outside the candidates at the last full pass
    passes = 0
    since = 0  # steps since the last full pass

    for _ in range(2 * k + 10):
        if sizes[0] >= k or r_norm <= tol * b_norm:
            break
        # Scoring <a * scale, r> = <a, scale * r>: the scaled atoms are never formed.
        rs = r if scale is None else r * scale
        since += 1
        j = -1
        if cand is not None and since < refresh:
            cand_scores = np.empty(len(cand))
            # One thread: a few thousand rows score in about a millisecond, less than a
            # fork/join costs when the cores are shared.
            score_block(cand_rows, half, rs, cand_inv, cand_scores, serial=True)
            jc = pick(cand_scores, excluded[cand], signed)
            if jc >= 0:
                score = float(cand_scores[jc])
                key = abs(score) if signed else score
                if key > left_out and key > threshold:
                    j = int(cand[jc])
        if j < 0:
            result = full_pass(rs, excluded, banned, signed, _CANDIDATES if refresh > 1 else 0)
            passes += 1
            j, score = result.j, result.score
            if j < 0 or (abs(score) if signed else score) <= threshold:
                break
            if refresh > 1:
                cand, left_out, since = result.cand, result.left_out, 0
                cand_rows = src.rows(cand)
                if half:
                    cand_rows = cand_rows.view(np.uint16)
                cand_inv = inv_norms[cand]
        a = src.rows(np.array([j]))[0].astype(np.float64)
        if scale is not None:
            a *= scale
        status = add_and_refit(a, j, score, b, X, G, h, w, L, perm, in_p, slot_atom,
                               slot_score, sizes, nonnegative, dual_tol, max_inner)
        if status == REJECT:
            banned[j] = excluded[j] = True
            continue
        excluded[j] = True
        r_norm = float(residual(b, X, w, int(sizes[0]), r))
        slot_rnorm[sizes[0] - 1] = r_norm
        dropped = compact(X, G, h, w, perm, in_p, slot_atom, slot_score, slot_rnorm, sizes)
        excluded[dropped] = banned[dropped]

    q = int(sizes[0])
    residual_norms = slot_rnorm[:q].copy()
    if q:
        residual_norms[-1] = r_norm
    return PursuitResult(indices=slot_atom[:q].copy(), weights=w[:q].copy(),
                         residual_norms=residual_norms, correlations=slot_score[:q].copy(),
                         passes=passes)


def correlations(atoms: Atoms, vector: np.ndarray, *, normalize: bool = True,
                 column_scale: np.ndarray | None = None, block_rows: int = 65536) -> np.ndarray:
    """``<a_i, vector> / ||a_i||`` for every atom (0 for zero atoms), in one blocked pass.

    ``atoms`` and ``column_scale`` as in ``pursuit``; with ``normalize=False`` the plain inner
    products.
    """
    src, v, scale = validate(atoms, vector, 1, 0.0, block_rows, column_scale, 1)
    inv_norms = inverse_norms(
        atom_norms(src, np.ones(src.d) if scale is None else scale * scale, block_rows), normalize)
    return score_all(src, v if scale is None else v * scale, inv_norms, block_rows,
                     np.empty(src.n))


def validate(atoms: Atoms, target: np.ndarray, k: int, tol: float, block_rows: int,
             column_scale: np.ndarray | None, refresh: int
             ) -> tuple[AtomSource, np.ndarray, np.ndarray | None]:
    """The atoms as an ``AtomSource``, the flat float64 target and the float64 column scale
    (None if not given); a ``ValueError`` naming the first bad argument."""
    src = AtomSource(atoms)
    target = np.asarray(target)
    if target.dtype.kind not in "fiu":
        raise ValueError(f"target must be numeric, got dtype {target.dtype}")
    if target.ndim not in (1, 2):
        raise ValueError(f"target must be (d,) or (t, d), got shape {target.shape}")
    if target.size != src.d:
        raise ValueError(
            f"target shape {target.shape} does not match atoms shape {(src.n, src.d)}: "
            f"target.size must equal atoms.shape[1] ({src.d})")
    b = np.ascontiguousarray(target, dtype=np.float64).reshape(-1)
    if not np.isfinite(b).all():
        raise ValueError("target contains NaN or inf")
    check_count("k", k)
    if k > src.n:
        raise ValueError(f"k={k} exceeds the number of atoms n={src.n}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    check_count("block_rows", block_rows)
    check_count("refresh", refresh)
    scale = None
    if column_scale is not None:
        scale = np.ascontiguousarray(column_scale, dtype=np.float64)
        if scale.shape != (src.d,):
            raise ValueError(f"column_scale must have shape ({src.d},), got {scale.shape}")
        if not (np.isfinite(scale).all() and (scale >= 0).all()):
            raise ValueError("column_scale must be finite and >= 0")
    return src, b, scale


def excluded_rows(exclude: np.ndarray | None, n: int) -> np.ndarray | None:
    """``exclude`` as a bool array of ``n`` rows (None stays None); a ``ValueError`` otherwise."""
    if exclude is None:
        return None
    off = np.asarray(exclude)
    if off.dtype != np.bool_ or off.shape != (n,):
        raise ValueError(f"exclude must be a bool array of shape ({n},), got "
                         f"{off.dtype} {off.shape}")
    return off.copy()


def check_search(search: str, refresh: int, candidates: int) -> None:
    """The arguments an index-searched pursuit needs; a ``ValueError`` naming the bad one."""
    if refresh != 1:
        raise ValueError(f"refresh must be 1 with search={search!r} (every step searches)")
    check_count("candidates", candidates)


def stop_threshold(tol: float, b: np.ndarray, normalize: bool, norms: np.ndarray) -> float:
    """The score a pick must beat: ``tol`` times the target's norm (times the largest atom
    norm when scores are not normalized)."""
    return tol * float(np.linalg.norm(b)) * (1.0 if normalize else float(norms.max()))


def check_count(name: str, value: object) -> None:
    """A ``ValueError`` unless ``value`` is an integer (not a bool) >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be >= 1 and an integer, got {value!r}")
