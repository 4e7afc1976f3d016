import numpy as np
import pytest

from curation.errors import CurationError
from curation.evaluate import EvalConfig, evaluate_subset
from curation.proxies.classifier import ProxySpec


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[3, 0], [0, 3], [-3, -3]], dtype=np.float32)
    return centers[y] + rng.standard_normal((n, 2)).astype(np.float32), y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_learns_separable_data(kind):
    x, y = _blobs(200, 0)
    tx, ty = _blobs(300, 1)
    result = evaluate_subset(x, y, tx, ty, 3, EvalConfig(ProxySpec(kind, 16), seeds=(0, 1)))
    assert result.mean > 0.9 and len(result.accuracies) == 2 and result.n_train == 200


def test_weights_are_used_only_when_asked():
    x, y = _blobs(60, 0)
    tx, ty = _blobs(300, 1)
    # Zero weight on every example of class 2: a weighted model cannot learn class 2.
    weights = np.where(y == 2, 1e-6, 1.0)
    weighted = evaluate_subset(x, y, tx, ty, 3, EvalConfig(use_weights=True), weights)
    plain = evaluate_subset(x, y, tx, ty, 3, EvalConfig(use_weights=False), weights)
    assert plain.mean > weighted.mean + 0.2


def test_empty_selection_is_an_error():
    tx, ty = _blobs(10, 1)
    with pytest.raises(CurationError, match="empty selection"):
        evaluate_subset(tx[:0], ty[:0], tx, ty, 3)
