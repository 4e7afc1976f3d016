"""Numba kernels of a pass over the atoms: scores and norms of float rows and of float16 rows
read as raw uint16 bits, and the pick of the best row.

Each row-loop kernel is one Python body compiled twice, a serial and a parallel twin
(``_twins``); ``score_block`` and ``norm_block`` are the one place that chooses between them.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

# Rows per parallel task in the float16 kernels; each task converts its rows through its own
# bit buffer, so a buffer is allocated per 64 rows rather than per row.
_F16_CHUNK = 64
# Blocks with fewer elements are scored on one thread: below this, the fork/join of a parallel
# region costs more than it saves (and much more when the cores are shared).
_PARALLEL_MIN_SIZE = 1 << 18


@numba.njit(cache=True, fastmath=True)
def dot_float(row, r):
    """<row, r> with float64 accumulation (reassociated: vectorized)."""
    acc = 0.0
    for j in range(row.shape[0]):
        acc += np.float64(row[j]) * r[j]
    return acc


# float32 of a half's bits as ``_half_bits`` writes them, times this, is the half's value.
_HALF_MAGIC = np.float32(2.0**112)


# Inlined into each caller (in Numba's IR), so the conversion loop is compiled with the
# caller's fastmath flags and, where the caller ignores the returned flag, without its test.
@numba.njit(cache=True, inline="always")
def _half_bits(row, bits):
    """Write float16 bit patterns ``row`` (uint16) into ``bits`` (uint32) as float32 bits of
    ``value * 2^-112``; True if any of them is inf/nan (which come out finite)."""
    bad = np.uint32(0)
    for j in range(row.shape[0]):
        h = np.uint32(row[j])
        # An all-ones exponent is inf/nan; the conversion below would make it finite.
        bad |= np.uint32((h & np.uint32(0x7C00)) == np.uint32(0x7C00))
        # Sign, exponent and mantissa moved to their float32 places: read as float32 this is
        # value * 2^-112, exactly, for normal and subnormal halves; * 2^112 after is exact too.
        bits[j] = ((h & np.uint32(0x8000)) << np.uint32(16)) \
            | ((h & np.uint32(0x7FFF)) << np.uint32(13))
    return bad != 0


@numba.njit(cache=True, fastmath=True)
def _dot_half(row, r, bits):
    """``dot_float`` of a float16 row given as uint16 bit patterns (finite values)."""
    d = row.shape[0]
    _half_bits(row, bits)
    scaled = bits.view(np.float32)
    magic = _HALF_MAGIC
    acc = 0.0
    for j in range(d):
        acc += np.float64(scaled[j] * magic) * r[j]
    return acc


# Reassociation lets the sums vectorize; no nnan/ninf flags, so inf/nan still propagate.
_SUM_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# Its own function because the row-loop twins compile without fastmath: inline, the sum of
# squares ran in order, unvectorized (4.3 of an 18.7 s index build over 1M x 1024 rows).
@numba.njit(cache=True, fastmath=_SUM_FASTMATH)
def _unpack_half(scaled, out):
    """out = ``scaled`` (float32 bits from ``_half_bits``) * 2^112, the halves' values; return
    the float64 sum of their squares."""
    magic = _HALF_MAGIC
    acc = 0.0
    for j in range(scaled.shape[0]):
        v = scaled[j] * magic
        out[j] = v
        acc += np.float64(v) * v
    return acc


@numba.njit(cache=True, fastmath=_SUM_FASTMATH)
def _norm_float(row, sq):
    """sqrt(sum_j sq[j] * row[j]^2) in float64 (inf/nan propagate)."""
    acc = 0.0
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        acc += v * v * sq[j]
    return np.sqrt(acc)


@numba.njit(cache=True, fastmath=_SUM_FASTMATH)
def _norm_half(row, sq, bits):
    """``_norm_float`` of a float16 row given as uint16 bit patterns; nan if any inf/nan."""
    d = row.shape[0]
    bad = _half_bits(row, bits)
    scaled = bits.view(np.float32)
    magic = _HALF_MAGIC
    acc = 0.0
    for j in range(d):
        v = np.float64(scaled[j] * magic)
        acc += v * v * sq[j]
    return np.nan if bad else np.sqrt(acc)


# ---------------------------------------------------------------------------------------------
# Row loops: plain Python bodies, each compiled into a serial and a parallel twin below
# ---------------------------------------------------------------------------------------------


def _scores_float(block, r, inv_norms, out):
    """out[i] = <block[i], r> * inv_norms[i], over rows."""
    for i in prange(block.shape[0]):
        out[i] = dot_float(block[i], r) * inv_norms[i]


def _scores_half(block, r, inv_norms, out):
    """As ``_scores_float`` for float16 rows given as uint16 bit patterns."""
    n, d = block.shape
    nchunks = (n + _F16_CHUNK - 1) // _F16_CHUNK
    for c in prange(nchunks):
        bits = np.empty(d, np.uint32)
        for i in range(c * _F16_CHUNK, min(n, (c + 1) * _F16_CHUNK)):
            out[i] = _dot_half(block[i], r, bits) * inv_norms[i]


def _scores_float_at(data, slots, r, inv_norms, out):
    """out[i] = <data[slots[i]], r> * inv_norms[i]: ``_scores_float`` of gathered rows,
    without the gathered copy."""
    for i in prange(slots.shape[0]):
        out[i] = dot_float(data[slots[i]], r) * inv_norms[i]


def _scores_half_at(data, slots, r, inv_norms, out):
    """As ``_scores_float_at`` for float16 rows given as uint16 bit patterns."""
    n, d = slots.shape[0], data.shape[1]
    nchunks = (n + _F16_CHUNK - 1) // _F16_CHUNK
    for c in prange(nchunks):
        bits = np.empty(d, np.uint32)
        for i in range(c * _F16_CHUNK, min(n, (c + 1) * _F16_CHUNK)):
            out[i] = _dot_half(data[slots[i]], r, bits) * inv_norms[i]


def _norms_float(block, sq, out):
    """out[i] = the ``sq``-weighted norm of block[i], over rows."""
    for i in prange(block.shape[0]):
        out[i] = _norm_float(block[i], sq)


def _norms_half(block, sq, out):
    """As ``_norms_float`` for float16 rows given as uint16 bit patterns."""
    n, d = block.shape
    nchunks = (n + _F16_CHUNK - 1) // _F16_CHUNK
    for c in prange(nchunks):
        bits = np.empty(d, np.uint32)
        for i in range(c * _F16_CHUNK, min(n, (c + 1) * _F16_CHUNK)):
            out[i] = _norm_half(block[i], sq, bits)


def _rows_half(block, normalize, rows, norms):
    """rows[i] = block[i] as float32 (divided by its norm with ``normalize``), norms[i] = its
    norm; both nan for a row holding inf/nan. One pass, no float16 temporaries: numpy's
    convert, norm and divide took 10 s of a 29 s index build over 1M x 1024 rows."""
    n, d = block.shape
    nchunks = (n + _F16_CHUNK - 1) // _F16_CHUNK
    for c in prange(nchunks):
        bits = np.empty(d, np.uint32)
        for i in range(c * _F16_CHUNK, min(n, (c + 1) * _F16_CHUNK)):
            bad = _half_bits(block[i], bits)
            norm = np.nan if bad else np.sqrt(_unpack_half(bits.view(np.float32), rows[i]))
            norms[i] = norm
            if bad:
                rows[i, :] = np.nan
            elif normalize and norm > 0:
                rows[i, :] *= np.float32(1.0 / norm)


class _Twins(NamedTuple):
    serial: Callable
    parallel: Callable


def _twins(body: Callable) -> _Twins:
    """``body`` compiled on one thread (``prange`` runs as ``range``) and parallel over rows.

    Numba's on-disk cache keys a function by its qualified name and line, not by ``parallel``:
    two dispatchers of one function object would load each other's machine code. So the serial
    twin compiles a copy of the function named ``<name>_serial``, which is cached apart.
    """
    serial = types.FunctionType(body.__code__, body.__globals__, f"{body.__name__}_serial",
                                body.__defaults__, body.__closure__)
    serial.__qualname__ = f"{body.__qualname__}_serial"
    serial.__doc__ = body.__doc__
    return _Twins(serial=numba.njit(cache=True)(serial),
                  parallel=numba.njit(cache=True, parallel=True)(body))


# Keyed by ``half`` (float16 rows given as uint16 bits).
_SCORES = {False: _twins(_scores_float), True: _twins(_scores_half)}
_SCORES_AT = {False: numba.njit(cache=True)(_scores_float_at),
              True: numba.njit(cache=True)(_scores_half_at)}  # one thread: a step's candidates
_NORMS = {False: _twins(_norms_float), True: _twins(_norms_half)}
_ROWS_HALF = _twins(_rows_half)


def _twin(twins: _Twins, block: np.ndarray, serial: bool) -> Callable:
    """The parallel twin for blocks of at least ``_PARALLEL_MIN_SIZE`` elements unless ``serial``."""
    return twins.parallel if block.size >= _PARALLEL_MIN_SIZE and not serial else twins.serial


def score_block(block: np.ndarray, half: bool, r: np.ndarray, inv_norms: np.ndarray,
                out: np.ndarray, serial: bool = False) -> None:
    """out = block @ r * inv_norms, on one thread for small blocks or if ``serial``."""
    _twin(_SCORES[half], block, serial)(block, r, inv_norms, out)


def score_rows(data: np.ndarray, slots: np.ndarray, half: bool, r: np.ndarray,
               inv_norms: np.ndarray, out: np.ndarray) -> None:
    """out = data[slots] @ r * inv_norms on one thread, without gathering the rows."""
    _SCORES_AT[half](data, slots, r, inv_norms, out)


def float_rows_half(block: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """float16 rows given as uint16 bits as float32 rows (unit rows with ``normalize``, zero
    rows stay zero) and their float32 norms; nan for rows holding inf/nan."""
    rows = np.empty(block.shape, np.float32)
    norms = np.empty(len(block), np.float32)
    _twin(_ROWS_HALF, block, False)(block, bool(normalize), rows, norms)
    return rows, norms


def norm_block(block: np.ndarray, half: bool, sq: np.ndarray, out: np.ndarray) -> None:
    """out = sqrt(block**2 @ sq) (inf/nan propagate), on one thread for small blocks."""
    _twin(_NORMS[half], block, False)(block, sq, out)


@numba.njit(cache=True)
def pick(scores, excluded, signed):
    """Best non-excluded row: max score (max |score| if signed), lowest row on ties."""
    best = -1
    best_key = -np.inf
    for i in range(scores.shape[0]):
        if excluded[i]:
            continue
        key = abs(scores[i]) if signed else scores[i]
        if key > best_key:
            best_key = key
            best = i
    return best
