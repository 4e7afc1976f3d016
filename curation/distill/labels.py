"""Labels of a distilled set: the teacher's soft labels, their structure removed, storage form."""

from __future__ import annotations

import numpy as np
import torch

from curation.training import numpy_rng


def teacher_soft_labels(expert, epoch: int, inputs: np.ndarray, temperature: float) -> np.ndarray:
    """The expert's softmax at ``epoch`` (0: its random initialization) with ``temperature``:
    (n, classes) float32."""
    from curation.distill.experts import checkpoint_at

    model = expert.load_model(checkpoint_at(expert, epoch))
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(inputs, np.float32)))
        return torch.softmax(logits / temperature, dim=1).numpy()


def remove_structure(probabilities: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each row with its top entry kept in place and the other entries permuted (seeded).

    Top class, entropy and every row's multiset of values survive; which wrong classes the
    teacher finds similar does not: the control for "structure, not smoothing, helps".
    """
    rng = numpy_rng(seed)
    q = np.array(probabilities, dtype=np.float32)
    top = q.argmax(axis=1)
    for row, keep in enumerate(top):
        others = np.flatnonzero(np.arange(q.shape[1]) != keep)
        q[row, others] = q[row, rng.permutation(others)]
    return q


def compact_labels(probabilities: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Soft labels as stored: top-k truncated (renormalized, ties to the lower class), float16."""
    q = np.array(probabilities, dtype=np.float32)
    if top_k is not None and top_k < q.shape[1]:
        order = np.argsort(-q, axis=1, kind="stable")
        q[np.arange(len(q))[:, None], order[:, top_k:]] = 0.0
        q /= q.sum(axis=1, keepdims=True)
    return q.astype(np.float16)
