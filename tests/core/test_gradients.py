import numpy as np
import torch
from torch import nn

from curation.gradients import adam_features, per_example_gradient_blocks, per_example_gradients
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


def test_adam_features_match_hand_computation():
    g = torch.tensor([[0.5, -1.0]])
    m, v = torch.tensor([0.1, 0.2]), torch.tensor([0.01, 0.04])
    out = adam_features(g, m, v, (0.9, 0.999), 1e-8)
    m_new = 0.9 * np.array([0.1, 0.2]) + 0.1 * np.array([0.5, -1.0])
    v_new = 0.999 * np.array([0.01, 0.04]) + 0.001 * np.array([0.25, 1.0])
    np.testing.assert_allclose(out.numpy()[0], m_new / np.sqrt(v_new + 1e-8), rtol=1e-5)
