"""The causal-LM proxy: tokenizer, encoding, LoRA per-example gradients, warm-up, stores."""

import socket
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from curation.datastore import DatastoreSpec, build_datastore
from curation.demo_data import ScenarioConfig, build_scenario, newsgroups_frame, pretraining_corpus
from curation.errors import CurationError
from curation.gradients import per_example_gradient_blocks
from curation.pool import validate_table
from curation.proxies import kind_of
from curation.proxies.causal_lm import (
    IGNORE,
    LMEvalConfig,
    LMSpec,
    PretrainConfig,
    adapter_names,
    build_model,
    cached_base,
    encode,
    finetune_perplexity,
    lm_device,
    lm_example_loss,
    load_lm_proxy,
    special_ids,
    token_loss,
    train_tokenizer,
    warmup_lm,
)
from curation.proxies.classifier import WarmupConfig
from curation.selectors import make_selector
from curation.workflow import GradientSettings, run_selection

pytestmark = pytest.mark.slow

TINY = LMSpec(vocab_size=300, hidden=32, layers=2, heads=2, intermediate=48, max_length=24,
              lora_rank=4)


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """Real 20 Newsgroups documents (short ones, so tests stay fast)."""
    frame = newsgroups_frame("train")
    return frame["text"].str.slice(0, 300).iloc[:120].tolist()


@pytest.fixture
def offline(monkeypatch):
    """The network is off: any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _pool(texts: list[str], prefix: str = "doc", **columns) -> object:
    table = pa.table({"id": [f"{prefix}-{i}" for i in range(len(texts))], "text": texts,
                      "label": [i % 3 for i in range(len(texts))], **columns})
    return validate_table(table, source=f"{prefix}.parquet")


def test_tokenizer_round_trips_text_and_is_deterministic(documents):
    tokenizer = train_tokenizer(documents, 400)
    samples = [*documents[:20], "naïve café — 東京 🚀\ttabs\nnewlines  two spaces", " lead"]
    for text in samples:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    again = train_tokenizer(documents, 400)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert tokenizer.get_vocab_size() == 400
    assert special_ids(tokenizer) == (0, 1)


def test_encode_puts_the_loss_on_response_tokens_only(documents):
    tokenizer = train_tokenizer(documents, 300)
    pad, eos = special_ids(tokenizer)
    prompts, responses = ["question: what is it", "q"], ["an answer", "a much longer answer " * 10]
    ids, targets = encode(tokenizer, responses, 32, prompts)
    n_prompt = len(tokenizer.encode(prompts[0]).ids)
    n_response = len(tokenizer.encode(responses[0]).ids) + 1
    assert (targets[0, :n_prompt] == IGNORE).all()
    assert (targets[0, n_prompt:n_prompt + n_response] == ids[0, n_prompt:n_prompt + n_response]
            ).all()
    assert ids[0, n_prompt + n_response - 1] == eos
    assert (ids[0, n_prompt + n_response:] == pad).all()
    assert (targets[0, n_prompt + n_response:] == IGNORE).all()
    # Too long: the response fills the window after its (short) prompt and is cut.
    assert n_prompt + n_response < 32 and (targets[1] != IGNORE).sum() == 32 - 1
    long_prompt, _ = encode(tokenizer, ["ok"], 16, ["word " * 40])
    _, long_targets = encode(tokenizer, ["ok"], 16, ["word " * 40])
    assert (long_targets[0] != IGNORE).sum() == len(tokenizer.encode("ok").ids) + 1
    assert long_prompt[0, 0] != pad  # the prompt keeps its end and fills the window
    text_ids, text_targets = encode(tokenizer, documents[:3], 16)
    assert (text_targets == np.where(text_targets == IGNORE, IGNORE, text_ids)).all()
    assert (text_targets[:, 0] != IGNORE).all()


def _loop_lora_gradients(model, names, ids, targets):
    """Reference: one autograd backward per example, through the peft model."""
    params = dict(model.named_parameters())
    rows = []
    for x, y in zip(ids, targets, strict=True):
        loss = lm_example_loss(model(input_ids=x[None]), y)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def test_lora_per_example_gradients_equal_an_autograd_loop(documents):
    tokenizer = train_tokenizer(documents, 300)
    ids, targets = encode(tokenizer, documents[:6], 24)
    targets[2, :10] = IGNORE  # a response-only example
    model = build_model(TINY, 300, seed=3).eval()
    names = adapter_names(model)
    assert names and all("lora_" in n for n in names)
    with torch.no_grad():  # LoRA B starts at zero, which would zero every A gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    x, y = torch.from_numpy(ids), torch.from_numpy(targets)
    blocks = per_example_gradient_blocks(model, names, x, y, lm_example_loss)
    fast = torch.cat(blocks, dim=1)
    reference = _loop_lora_gradients(model, names, x, y)
    assert fast.abs().max() > 0
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=1e-4)
    # Right padding changes nothing: a short example's gradient equals its unpadded one.
    short_ids, short_targets = encode(tokenizer, ["short text"], 24)
    length = int((short_targets[0] != IGNORE).sum())
    padded = per_example_gradient_blocks(model, names, torch.from_numpy(short_ids),
                                         torch.from_numpy(short_targets), lm_example_loss)
    unpadded = per_example_gradient_blocks(model, names, torch.from_numpy(short_ids[:, :length]),
                                           torch.from_numpy(short_targets[:, :length]),
                                           lm_example_loss)
    torch.testing.assert_close(torch.cat(padded, 1), torch.cat(unpadded, 1), atol=1e-6, rtol=1e-5)


def test_warmup_store_finetune_run_offline_and_reproducibly(tmp_path, documents, offline):
    pool = _pool(documents[:60])
    config = WarmupConfig(fraction=0.5, epochs=2, checkpoints=2, lr=3e-3, batch_size=8, seed=1)
    proxy = warmup_lm(pool, tmp_path / "proxy", TINY, config)
    again = warmup_lm(pool, tmp_path / "again", TINY, config)
    assert [c.sha256 for c in proxy.checkpoints] == [c.sha256 for c in again.checkpoints]
    assert (tmp_path / "proxy" / "tokenizer.json").exists()
    loaded = load_lm_proxy(tmp_path / "proxy")
    ids, targets = loaded.encode(pool)
    assert ids.shape == (60, TINY.max_length)

    stores = {}
    for kind in ("sgd", "adam"):
        spec = DatastoreSpec(kind=kind, dim=32, batch_size=16, shard_size=25)
        stores[kind] = build_datastore(loaded, ids, targets, pool.ids, tmp_path / kind, spec)
        assert stores[kind].manifest["shape"] == [60, 2, 32]
        assert all("lora_" in n for n in stores[kind].manifest["param_names"])
    first = np.concatenate([s.astype(np.float32) for s in stores["sgd"].shards()])
    assert np.isfinite(first).all() and np.abs(first).max() > 0
    assert not np.allclose(first, np.concatenate([s for s in stores["adam"].shards()]))
    rebuilt = build_datastore(loaded, ids, targets, pool.ids, tmp_path / "sgd-again",
                              DatastoreSpec(dim=32, batch_size=7, shard_size=25))
    np.testing.assert_array_equal(np.concatenate(rebuilt.shards()),
                                  np.concatenate(stores["sgd"].shards()))

    with pytest.raises(CurationError, match="class predictions need a classifier proxy"):
        kind_of(loaded).predictions(loaded, ids)

    before = token_loss(loaded.load_model(loaded.checkpoints[-1]), ids[:20], targets[:20])
    result = finetune_perplexity(loaded, ids[:20], targets[:20], ids[:20], targets[:20],
                                 LMEvalConfig(epochs=3, lr=3e-3), seed=0)
    assert result["test_loss"] < before
    assert result["test_perplexity"] == pytest.approx(np.exp(result["test_loss"]))
    weighted = finetune_perplexity(loaded, ids[:20], targets[:20], ids[:20], targets[:20],
                                   LMEvalConfig(epochs=3, lr=3e-3), seed=0,
                                   weights=np.ones(20))
    assert weighted["test_loss"] == pytest.approx(result["test_loss"], rel=1e-3)


def test_lora_stores_built_on_dask_workers_have_the_same_bytes(tmp_path, documents):
    from distributed import LocalCluster

    pool = _pool(documents[:40])
    proxy = warmup_lm(pool, tmp_path / "proxy", TINY,
                      WarmupConfig(fraction=0.5, epochs=2, checkpoints=2, batch_size=8))
    ids, targets = proxy.encode(pool)
    spec = DatastoreSpec(dim=16, shard_size=15, batch_size=8)
    local = build_datastore(proxy, ids, targets, pool.ids, tmp_path / "local", spec)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster:
        remote = build_datastore(proxy, ids, targets, pool.ids, tmp_path / "remote", spec,
                                 scheduler=cluster.scheduler_address)
    assert remote.report.computed == (0, 1, 2)
    assert remote.manifest == local.manifest


def test_a_damaged_checkpoint_is_refused(tmp_path, documents):
    proxy = warmup_lm(_pool(documents[:20]), tmp_path / "proxy", TINY,
                      WarmupConfig(fraction=0.5, epochs=1, checkpoints=1, batch_size=8))
    path = proxy.checkpoints[0].model_path
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(CurationError, match="checkpoint-001.safetensors"):
        load_lm_proxy(tmp_path / "proxy")


def test_selectors_run_unchanged_on_lora_gradient_stores(tmp_path, documents, offline):
    frame = newsgroups_frame("train")
    sci = frame[frame["domain"] == "sci"]["text"].str.slice(0, 300).iloc[:10].tolist()
    pool = _pool(documents[:50])
    target = _pool(sci, prefix="target")
    settings = GradientSettings(TINY, WarmupConfig(fraction=0.5, epochs=2, checkpoints=2,
                                                   lr=3e-3, batch_size=8),
                                DatastoreSpec(dim=32, batch_size=16))
    picked = {}
    for method in ("gtp", "less", "random"):
        selection, lineage = run_selection(pool, target, make_selector(method), 5, tmp_path,
                                           settings)
        assert len(selection) == 5 and len(set(selection.indices)) == 5
        picked[method] = selection.indices
        if method != "random":
            assert lineage["datastores"] and len(lineage["proxy_checkpoints"]) == 2
    again, _ = run_selection(pool, target, make_selector("gtp"), 5, tmp_path, settings)
    np.testing.assert_array_equal(again.indices, picked["gtp"])
    with pytest.raises(CurationError, match="class predictions"):
        run_selection(pool, target, make_selector("el2n"), 5, tmp_path, settings)


def test_the_device_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CURATION_DEVICE", "cpu")
    assert lm_device() == torch.device("cpu")
    monkeypatch.setenv("CURATION_DEVICE", "toaster")
    with pytest.raises(CurationError, match="CURATION_DEVICE='toaster' is not a torch device"):
        lm_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("CURATION_DEVICE", "cuda")
        with pytest.raises(CurationError, match="no CUDA device"):
            lm_device()


def test_spec_errors_name_the_field():
    with pytest.raises(CurationError, match="'hidden'"):
        LMSpec(hidden=30, heads=4)
    with pytest.raises(CurationError, match="base_path"):
        LMSpec(base_path="/nonexistent/model")
    with pytest.raises(CurationError, match="lora_targets"):
        build_model(LMSpec(lora_targets=("no_such_module",), hidden=32, heads=2, layers=1), 50)


def test_an_instruction_pool_trains_and_selects_on_response_tokens(tmp_path, documents, offline):
    words = [d.split() for d in documents[:40]]
    table = pa.table({"id": [f"ins-{i}" for i in range(40)],
                      "prompt": ["continue the post: " + " ".join(w[:8]) for w in words],
                      "response": [" ".join(w[8:30]) or "nothing" for w in words]})
    pool = validate_table(table, source="instructions.parquet", require_label=False)
    assert pool.input_column == "prompt+response" and pool.texts[0].startswith("continue")
    spec = replace(TINY, max_length=128)  # room for the whole prompt
    settings = GradientSettings(spec, WarmupConfig(fraction=0.5, epochs=1, checkpoints=1,
                                                   batch_size=8),
                                DatastoreSpec(dim=32, batch_size=16))
    selection, _ = run_selection(pool, pool.take(np.arange(5)), make_selector("gtp"), 4,
                                 tmp_path, settings)
    assert len(selection) == 4
    proxy = load_lm_proxy(next((tmp_path / "proxies").iterdir()))
    ids, targets = proxy.encode(pool)
    n_prompt = len(proxy.tokenizer().encode(table.column("prompt")[0].as_py()).ids)
    assert (targets[0, :n_prompt] == IGNORE).all() and (targets[0, n_prompt] != IGNORE)
    bad = table.set_column(2, "response", pa.array([None] + ["x"] * 39, pa.string()))
    with pytest.raises(CurationError, match="instructions.parquet: column 'response' has 1 null"):
        validate_table(bad, source="instructions.parquet", require_label=False)


def test_a_pretrained_local_base_is_opened_offline_and_only_its_adapters_train(
        tmp_path, documents, offline):
    config = PretrainConfig(epochs=1, batch_size=16)
    base = cached_base(tmp_path, documents[:80], TINY, config)
    assert (base / "tokenizer.json").exists() and list(base.glob("*.safetensors"))
    assert cached_base(tmp_path, documents[:80], TINY, config) == base  # reused, not retrained
    assert not list(base.parent.glob(".*.tmp"))
    spec = LMSpec(base_path=str(base), max_length=TINY.max_length, lora_rank=4)
    assert not spec.trains_base
    pool = _pool(documents[80:110])
    proxy = warmup_lm(pool, tmp_path / "proxy", spec,
                      WarmupConfig(fraction=0.5, epochs=1, checkpoints=1, batch_size=8))
    saved = load_file(proxy.checkpoints[0].model_path)
    assert saved and all("lora_" in name for name in saved)
    model = load_lm_proxy(tmp_path / "proxy").load_model(proxy.checkpoints[0])
    assert model.get_input_embeddings().weight.shape[0] == 300  # the base's own vocabulary
    ids, targets = proxy.encode(pool)
    store = build_datastore(proxy, ids, targets, pool.ids, tmp_path / "store",
                            DatastoreSpec(dim=16, batch_size=8))
    assert store.manifest["shape"] == [30, 1, 16]


def test_the_pretraining_corpus_leaves_out_pool_and_target():
    tables = build_scenario(ScenarioConfig("targeted-text", pool_size=300, target_size=20))
    used = [*tables.pool.column("id").to_pylist(), *tables.target.column("id").to_pylist()]
    corpus = pretraining_corpus(500, used)
    assert len(corpus) == 500 and corpus == pretraining_corpus(500, used)
    assert not set(corpus) & set(tables.pool.column("text").to_pylist())
    assert not set(corpus) & set(tables.target.column("text").to_pylist())
    with pytest.raises(CurationError, match="size must be in 1..10973"):
        pretraining_corpus(20_000, used)
