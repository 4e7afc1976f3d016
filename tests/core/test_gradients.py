import numpy as np
import torch
from torch import nn

from curation.gradients import GaussianProjector, adam_features, per_example_gradients
from curation.proxy import ProxySpec, parameter_names


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
    for which in ("all", "last"):
        names = parameter_names(model, which)
        fast = per_example_gradients(model, names, x, y)
        assert fast.shape == (7, sum(dict(model.named_parameters())[n].numel() for n in names))
        torch.testing.assert_close(fast, _loop_gradients(model, names, x, y), atol=1e-6,
                                   rtol=1e-5)


def test_adam_features_match_hand_computation():
    g = torch.tensor([[0.5, -1.0]])
    m, v = torch.tensor([0.1, 0.2]), torch.tensor([0.01, 0.04])
    out = adam_features(g, m, v, (0.9, 0.999), 1e-8)
    m_new = 0.9 * np.array([0.1, 0.2]) + 0.1 * np.array([0.5, -1.0])
    v_new = 0.999 * np.array([0.01, 0.04]) + 0.001 * np.array([0.25, 1.0])
    np.testing.assert_allclose(out.numpy()[0], m_new / np.sqrt(v_new + 1e-8), rtol=1e-5)


def test_projection_preserves_inner_products_within_jl_bound():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((40, 5000)).astype(np.float32))
    x = x / x.norm(dim=1, keepdim=True)
    dim = 1024
    projected = GaussianProjector(5000, dim, seed=3, block_rows=1024)(x)
    true = (x @ x.T).numpy()
    approx = (projected @ projected.T).numpy()
    # JL: for unit vectors, |<Px,Py> - <x,y>| <= eps with eps ~ c*sqrt(log(n)/dim); c=4 is loose.
    bound = 4 * np.sqrt(np.log(40) / dim)
    assert np.abs(approx - true).max() < bound


def test_projection_is_seeded_and_blockwise_consistent():
    x = torch.randn(3, 300, generator=torch.Generator().manual_seed(0))
    a = GaussianProjector(300, 16, seed=7, block_rows=64)
    b = GaussianProjector(300, 16, seed=7, block_rows=64, cache_bytes=0)  # regenerate blocks
    torch.testing.assert_close(a(x), b(x))
    dense = torch.cat([a.block(i) for i in range(5)])
    torch.testing.assert_close(a(x), x @ dense)
    assert not torch.allclose(a(x), GaussianProjector(300, 16, seed=8, block_rows=64)(x))
