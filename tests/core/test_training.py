"""The shared training loop: the same steps, batch order and snapshots as a hand-written loop."""

import torch
from safetensors.torch import load_file
from torch import nn

from curation.training import init_seed, train


def _data():
    generator = torch.Generator().manual_seed(7)
    return torch.randn(37, 5, generator=generator), torch.randint(0, 3, (37,), generator=generator)


def _model(seed: int) -> nn.Module:
    init_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def test_train_is_the_reference_adam_minibatch_loop_bit_for_bit(tmp_path):
    x, y = _data()
    reference = _model(1)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-3)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        for batch in torch.randperm(len(x), generator=generator).split(10):
            optimizer.zero_grad()
            nn.functional.cross_entropy(reference(x[batch]), y[batch]).backward()
            optimizer.step()

    model, steps = _model(1), []
    checkpoints = train(model, model.parameters(),
                        lambda b: nn.functional.cross_entropy(model(x[b]), y[b]), len(x),
                        batch_size=10, epochs=3, seed=3, lr=1e-2, weight_decay=1e-3,
                        out_dir=tmp_path, snapshot_at={0, 2, 3}, on_step=lambda: steps.append(1))
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)
    assert len(steps) == 12
    assert [(c.epoch, c.step) for c in checkpoints] == [(0, 0), (2, 8), (3, 12)]
    assert all((v == 0).all() for v in load_file(checkpoints[0].optimizer_path).values())
    last = load_file(checkpoints[-1].model_path)
    assert all(torch.equal(last[n], v) for n, v in reference.state_dict().items())
