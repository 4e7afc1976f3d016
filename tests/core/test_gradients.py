import doctest

import numba
import numpy as np
import pytest
import torch
from scipy.linalg import hadamard
from torch import nn

import curation.gradients
from curation.errors import CurationError
from curation.gradients import (
    GaussianProjector,
    HadamardProjector,
    adam_features,
    make_projector,
    per_example_gradient_blocks,
    per_example_gradients,
    projection_distortion,
)
from curation.proxies.classifier import ProxySpec, parameter_names


def _loop_gradients(model, names, x, y):
    """Reference: one backward pass per example (the LESS way)."""
    rows = []
    params = dict(model.named_parameters())
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        rows.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    return torch.stack(rows)


def test_vmap_gradients_equal_per_example_loop():
    model = ProxySpec("mlp", hidden=8).build(5, 3, seed=1)
    x, y = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), torch.arange(7) % 3
    names_of = {"all": parameter_names(model, "all"), "last": parameter_names(model, "last"),
                "reordered": ["2.bias", "0.weight"]}
    for names in names_of.values():
        fast = per_example_gradients(model, names, x, y)
        assert fast.shape == (7, sum(dict(model.named_parameters())[n].numel() for n in names))
        torch.testing.assert_close(fast, _loop_gradients(model, names, x, y), atol=1e-6,
                                   rtol=1e-5)


def test_gradient_blocks_are_per_parameter_views():
    model = ProxySpec("mlp", hidden=8).build(5, 3, seed=1)
    x, y = torch.randn(4, 5), torch.arange(4) % 3
    names = parameter_names(model, "all")
    blocks = per_example_gradient_blocks(model, names, x, y)
    assert [b.shape for b in blocks] == [(4, 40), (4, 8), (4, 24), (4, 3)]
    assert all(b.is_contiguous() for b in blocks)
    torch.testing.assert_close(torch.cat(blocks, dim=1), per_example_gradients(model, names, x, y))


@pytest.mark.parametrize("kind", ["srht", "gaussian"])
def test_projecting_column_blocks_equals_projecting_the_whole(kind, monkeypatch):
    x = torch.randn(9, 300, generator=torch.Generator().manual_seed(2))
    widths = [7, 150, 1, 142]  # boundaries that do not line up with Gaussian matrix blocks
    blocks = list(x.split(widths, dim=1))
    if kind == "srht":
        projector = HadamardProjector(300, 32, seed=5)
    else:
        projector = GaussianProjector(300, 32, seed=5, block_rows=64, cache_bytes=0)
        generated = []
        original = GaussianProjector.block
        monkeypatch.setattr(GaussianProjector, "block",
                            lambda self, i: generated.append(i) or original(self, i))
    torch.testing.assert_close(projector(blocks), projector(x), atol=1e-5, rtol=1e-5)
    if kind == "gaussian":  # regenerated path: every matrix block made once per call
        assert generated == [0, 1, 2, 3, 4] * 2
    with pytest.raises(CurationError, match="column blocks"):
        projector(blocks[:-1])


def test_adam_features_match_hand_computation():
    g = torch.tensor([[0.5, -1.0]])
    m, v = torch.tensor([0.1, 0.2]), torch.tensor([0.01, 0.04])
    out = adam_features(g, m, v, (0.9, 0.999), 1e-8)
    m_new = 0.9 * np.array([0.1, 0.2]) + 0.1 * np.array([0.5, -1.0])
    v_new = 0.999 * np.array([0.01, 0.04]) + 0.001 * np.array([0.25, 1.0])
    np.testing.assert_allclose(out.numpy()[0], m_new / np.sqrt(v_new + 1e-8), rtol=1e-5)


@pytest.mark.parametrize("kind", ["srht", "gaussian"])
def test_projection_preserves_inner_products_within_jl_bound(kind):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((40, 5000)).astype(np.float32))
    dim = 1024
    projected = make_projector(kind, 5000, dim, seed=3)(x)
    distortion = projection_distortion(x.numpy(), projected.numpy())
    # JL: for unit vectors, |<Px,Py> - <x,y>| <= eps with eps ~ c*sqrt(log(n)/dim); c=4 is loose.
    bound = 4 * np.sqrt(np.log(40) / dim)
    assert distortion["inner_max"] < bound and distortion["norm_max"] < bound
    # The typical error is ~ sqrt(2 / (pi * dim)) for near-orthogonal pairs.
    assert 0.5 * np.sqrt(2 / (np.pi * dim)) < distortion["inner_mean"] < 1.5 * np.sqrt(
        2 / (np.pi * dim))


@pytest.mark.parametrize("in_dim, out_dim", [(1000, 64), (650, 1024), (37, 5), (64, 64)])
def test_hadamard_projector_equals_dense_reference(in_dim, out_dim):
    projector = HadamardProjector(in_dim, out_dim, seed=3)
    x = torch.randn(13, in_dim, generator=torch.Generator().manual_seed(1))
    padded = np.zeros((13, projector.padded_dim))
    padded[:, :in_dim] = x.numpy()
    reference = ((padded * projector.signs) @ hadamard(projector.padded_dim))[:, projector.keep]
    np.testing.assert_allclose(projector(x).numpy(), reference / np.sqrt(out_dim), atol=1e-5)
    assert projector.padded_dim >= max(in_dim, out_dim)
    assert len(np.unique(projector.keep)) == out_dim


def test_hadamard_projector_is_seeded_and_thread_count_independent():
    x = torch.randn(300, 3000, generator=torch.Generator().manual_seed(0))  # parallel path
    projector = HadamardProjector(3000, 128, seed=7)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = projector(x).numpy().copy()
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(projector(x).numpy(), one)
    np.testing.assert_array_equal(HadamardProjector(3000, 128, seed=7)(x[:5]).numpy(), one[:5])
    assert not np.allclose(HadamardProjector(3000, 128, seed=8)(x).numpy(), one)


def test_gaussian_projection_is_seeded_and_regenerated_blocks_agree():
    x = torch.randn(3, 300, generator=torch.Generator().manual_seed(0))
    a = GaussianProjector(300, 16, seed=7, block_rows=64)
    b = GaussianProjector(300, 16, seed=7, block_rows=64, cache_bytes=0)  # regenerate blocks
    torch.testing.assert_close(a(x), b(x))
    assert len(a._blocks) == 5 and not b._blocks  # b really took the regeneration path
    dense = torch.cat([a.block(i) for i in range(5)])
    torch.testing.assert_close(a(x), x @ dense)
    assert not torch.allclose(a(x), GaussianProjector(300, 16, seed=8, block_rows=64)(x))


def test_projector_errors_name_the_problem():
    with pytest.raises(CurationError, match="projection must be one of"):
        make_projector("sparse", 10, 4)
    with pytest.raises(CurationError, match="'dim' must be positive"):
        HadamardProjector(10, 0)
    with pytest.raises(CurationError, match=r"expects \(rows, 10\) input"):
        HadamardProjector(10, 4)(torch.zeros(2, 9))


def test_docstring_examples_run():
    result = doctest.testmod(curation.gradients)
    assert result.attempted > 0 and result.failed == 0
