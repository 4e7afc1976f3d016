"""The frozen prefix under top-layer adapters: the same losses and gradients as the full model,
each sequence's prefix computed once, and the datastore and fine-tuning going through it."""

import numpy as np
import pytest
import torch

from curation.gradients import per_example_gradient_blocks
from curation.proxies import lm_prefix
from curation.proxies.causal_lm import (
    IGNORE,
    LMProxy,
    LMSpec,
    adapter_names,
    build_model,
    encode,
    lm_batch_loss,
    lm_example_loss,
    train_tokenizer,
)
from curation.proxies.lm_prefix import loss_positions, sequence_lengths

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "over", "green",
         "hills", "and", "old", "towns"]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    """A 4-layer Llama with grouped-query attention (as SmolLM2), saved as a local base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-base")
    tokenizer = train_tokenizer(_texts(200, 0), 160)
    tokenizer.save(str(directory / "tokenizer.json"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                         intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, use_cache=False,
                         tie_word_embeddings=True, attn_implementation="sdpa")
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return str(directory)


def _model(base: str, lora_layers: int = 2):
    spec = LMSpec(base_path=base, lora_layers=lora_layers, max_length=20,
                  lora_targets=("q_proj", "v_proj", "down_proj"))
    model = build_model(spec, 0)
    with torch.no_grad():  # trained adapters: every gradient entry is non-zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return model.eval()


def _batch(base: str, n: int = 6, seed: int = 3):
    from curation.proxies.causal_lm import load_tokenizer

    tokenizer = load_tokenizer(f"{base}/tokenizer.json")
    ids, targets = encode(tokenizer, _texts(n, seed + 1), 20, prompts=_texts(n, seed))
    return torch.from_numpy(ids), torch.from_numpy(targets)


def test_only_the_top_layers_carry_adapters_and_the_rest_is_the_prefix(tiny_base):
    model = _model(tiny_base, lora_layers=2)
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n in adapter_names(model)}
    assert layers == {2, 3}
    assert model.frozen_prefix.start == 2
    assert build_model(LMSpec(base_path=tiny_base), 0).frozen_prefix is None  # every layer
    with pytest.raises(Exception, match="'lora_layers' is 9 but the base has 4 layers"):
        build_model(LMSpec(base_path=tiny_base, lora_layers=9), 0)


def test_losses_through_the_prefix_equal_the_full_model(tiny_base):
    model = _model(tiny_base)
    ids, targets = _batch(tiny_base)
    prefix, model.frozen_prefix = model.frozen_prefix, None
    with torch.no_grad():
        full = {r: lm_batch_loss(model, ids, targets, r) for r in ("mean", "sum", "none")}
        model.frozen_prefix = prefix
        cut = {r: lm_batch_loss(model, ids, targets, r) for r in ("mean", "sum", "none")}
    for reduction in full:
        assert cut[reduction].shape == full[reduction].shape
        torch.testing.assert_close(cut[reduction], full[reduction], rtol=1e-5, atol=1e-6)


def test_per_example_gradients_equal_the_full_model_at_every_checkpoint(tiny_base):
    models = [_model(tiny_base), _model(tiny_base)]
    with torch.no_grad():
        for p in models[1].parameters():
            if p.requires_grad:
                p.mul_(-2.0)  # a second checkpoint: other adapter values, the same prefix
    ids, targets = _batch(tiny_base)
    names = adapter_names(models[0])
    cut = list(LMProxy.batch_gradients(models, names, ids, targets))
    for model, blocks in zip(models, cut, strict=True):
        model.frozen_prefix = None
        full = per_example_gradient_blocks(model, names, ids, targets, lm_example_loss)
        for got, want in zip(blocks, full, strict=True):
            assert got.shape == want.shape == (len(ids), want.shape[1])
            assert bool((want.abs().sum(1) > 0).all())  # a real gradient for every example
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_each_sequence_runs_through_the_prefix_once(tiny_base, monkeypatch):
    monkeypatch.setattr(lm_prefix, "_CACHES", {})
    model = _model(tiny_base)
    ids, targets = _batch(tiny_base, n=5)
    calls = []
    original = lm_prefix.FrozenPrefix._prefix
    monkeypatch.setattr(lm_prefix.FrozenPrefix, "_prefix",
                        lambda self, m, x: calls.append(len(x)) or original(self, m, x))
    with torch.no_grad():
        first = lm_batch_loss(model, ids, targets)
        again = lm_batch_loss(model, ids[[4, 0, 2]], targets[[4, 0, 2]])
        lm_batch_loss(model, ids[[1, 3]], targets[[1, 3]])
    assert calls == [5]
    assert model.frozen_prefix.cache.hits == 5 and model.frozen_prefix.cache.misses == 5
    assert torch.isfinite(first) and torch.isfinite(again)


def test_the_cache_stays_within_its_byte_budget():
    cache = lm_prefix.PrefixCache(max_bytes=3 * 40)
    for i in range(5):
        cache.put(bytes([i]), torch.zeros(10))  # 40 bytes each
    assert cache.bytes == 120 and list(cache.states) == [bytes([2]), bytes([3]), bytes([4])]


def test_loss_positions_pick_every_target_token_and_pad_the_rest():
    targets = torch.tensor([[IGNORE, IGNORE, 7, 8, IGNORE], [IGNORE, 5, IGNORE, IGNORE, IGNORE]])
    positions, labels = loss_positions(targets, 5)
    assert positions.tolist() == [[1, 2], [0, 0]]
    assert labels.tolist() == [[7, 8], [5, IGNORE]]
    assert sequence_lengths(targets).tolist() == [4, 2]


def test_a_recorded_norm_weight_takes_the_vmap_path_with_the_same_gradients(tiny_base):
    model = _model(tiny_base)
    ids, targets = _batch(tiny_base)
    names = [n for n in adapter_names(model) if ".layers.3." in n]
    names.append(next(n for n, _ in model.named_parameters() if n.endswith("model.norm.weight")))
    (blocks,) = LMProxy.batch_gradients([model], names, ids, targets)
    model.frozen_prefix = None
    full = per_example_gradient_blocks(model, names, ids, targets, lm_example_loss)
    for got, want in zip(blocks, full, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_subsets_fine_tune_from_the_base_on_a_frozen_pretrained_base(tiny_base, tmp_path):
    import pyarrow as pa

    from curation.pool import validate_table
    from curation.proxies.causal_lm import (
        LMEvalConfig,
        finetune_perplexity,
        held_out_scores,
        warmup_lm,
    )
    from curation.proxies.classifier import WarmupConfig

    spec = LMSpec(base_path=tiny_base, lora_layers=2, max_length=20)
    assert LMEvalConfig().starts_from_base(spec)
    assert not LMEvalConfig().starts_from_base(LMSpec())  # a random base trains from warm-up
    assert not LMEvalConfig(start="warmup").starts_from_base(spec)
    table = pa.table({"id": [f"r{i}" for i in range(16)], "prompt": _texts(16, 5),
                      "response": _texts(16, 6)})
    pool = validate_table(table, source="pool", require_label=False)
    proxy = warmup_lm(pool, tmp_path / "proxy", spec,
                      WarmupConfig(fraction=1.0, epochs=2, checkpoints=1, lr=0.05, batch_size=4))
    ids, targets = proxy.encode(pool)
    start = {"base": proxy.load_model(None), "warmup": proxy.load_model(proxy.checkpoints[-1])}
    losses = {k: held_out_scores(m, ids, targets, None)["test_loss"] for k, m in start.items()}
    assert abs(losses["base"] - losses["warmup"]) > 1e-3  # the warm-up moved the adapters
    for kind, loss in losses.items():  # a vanishing learning rate: the starting point's loss
        run = finetune_perplexity(proxy, ids[:4], targets[:4], ids, targets,
                                  LMEvalConfig(lr=1e-12, epochs=1, start=kind))
        assert run["test_loss"] == pytest.approx(loss, rel=1e-5)
