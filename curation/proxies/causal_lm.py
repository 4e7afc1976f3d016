"""Causal language-model proxies: a small ``transformers`` model with LoRA adapters (``peft``).

The proxy kind ``causal-lm`` (``LMSpec``) gives gradient selection a real language model.

Model
    A Llama-architecture causal LM built from a small config with random weights (no
    download), or the model in ``base_path`` (a local ``save_pretrained`` directory, opened
    with ``local_files_only``). LoRA adapters wrap ``lora_targets``; the per-example gradients
    recorded in the datastore are those of the adapter parameters only, as in LESS.

Tokenizer
    Never downloaded: a byte-level BPE trained on the pool's texts with ``tokenizers`` (saved
    beside the checkpoints as ``tokenizer.json``), or the ``tokenizer.json`` of ``base_path``.
    Byte-level BPE has no normalizer, so decoding gives back exactly the text encoded.

Examples
    A pool with ``prompt`` and ``response`` columns is encoded as prompt + response + EOS with
    the loss on response tokens only; otherwise ``text`` + EOS with the loss on every token.
    Sequences are cut at ``max_length`` (a long prompt loses its start, so the response keeps
    at least half the window) and right-padded. Padding sits after every real token, so under
    causal attention it cannot change the loss of a real token and no attention mask is needed:
    that keeps one example's loss a pure function of its token ids, which ``torch.func.vmap``
    needs. Targets are the token ids with -100 where there is no loss.

Warm-up
    Adam on a seeded fraction of the pool; a checkpoint stores the trainable parameters and
    their Adam moments (safetensors). With a random base, the base weights train too
    (``train_base`` defaults to True then: a random frozen transformer under LoRA learns almost
    nothing); the initial base weights are saved once as ``base.safetensors`` so a proxy
    directory is complete on its own. With ``base_path`` only the adapters train by default.

Evaluation (``finetune_perplexity``)
    Fine-tune the proxy's last checkpoint on a subset for a fixed number of epochs, then report
    the token-level loss and perplexity of held-out text (lower is better).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from curation.config import choice, config, default_of
from curation.errors import CurationError
from curation.io import atomic_path, sha256_file, write_json
from curation.pool import Pool
from curation.proxies.base import (
    Checkpoint,
    EvalData,
    ProxyKind,
    SubsetScore,
    checkpoint_epochs,
    checkpoint_records,
    read_proxy_record,
)
from curation.proxies.classifier import WarmupConfig
from curation.training import init_seed, numpy_rng, train

# vmap has no batching rule for CPU flash attention and falls back to a loop, with a warning per
# call. Eager attention avoids the fallback but is no faster (benchmarks/bench_lora_gradients.py:
# 120 vs 101 examples/s on 2 threads, 112 vs 124 on 1), so SDPA stays and the warning is noise.
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet "
                        "implemented the batching rule", category=UserWarning)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)

LM_KIND = "causal-lm"
IGNORE = -100
PAD, EOS = "<pad>", "<eos>"


def lm_device() -> torch.device:
    """Where LM work runs: ``$CURATION_DEVICE`` if set, else CUDA when available, else CPU.
    Only tensors move; files and features are the same bytes on any device."""
    name = os.environ.get("CURATION_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CurationError(f"CURATION_DEVICE={name!r} is not a torch device (cpu, cuda, "
                            "cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CurationError(f"CURATION_DEVICE={name!r} but this torch build sees no CUDA device")
    return device


@config("causal-lm")
class LMSpec:
    """Architecture, tokenizer and adapters of a causal-LM proxy."""

    kind: choice([LM_KIND]) = Field(default=LM_KIND, description="Always causal-lm.")
    vocab_size: int = Field(default=2048, gt=0, description="Tokenizer vocabulary (random base).")
    hidden: int = Field(default=128, gt=0, description="Hidden size (a multiple of 'heads').")
    layers: int = Field(default=2, gt=0, description="Transformer layers.")
    heads: int = Field(default=4, gt=0, description="Attention heads.")
    intermediate: int = Field(default=256, gt=0, description="MLP width.")
    max_length: int = Field(default=128, ge=2, description="Token window (longer text is cut).")
    lora_rank: int = Field(default=8, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(default=16.0, description="LoRA scale.")
    lora_targets: tuple[str, ...] = Field(default=("q_proj", "v_proj"), min_length=1,
                                          description="Modules wrapped with LoRA adapters.")
    lora_layers: int = Field(default=0, ge=0, description=(
        "Adapters on the top N layers only (0: every layer). With a frozen base the layers "
        "below are a frozen prefix, computed once per sequence and reused (curation.proxies."
        "lm_prefix)."))
    base_path: str = Field(default="", description=(
        "A local model directory (save_pretrained + tokenizer.json); empty: a random base."))
    train_base: bool | None = Field(default=None, description=(
        "Train the base weights too [default: yes for a random base, no with base_path]."))

    @field_validator("base_path")
    @classmethod
    def _base_is_a_directory(cls, base_path: str) -> str:
        if base_path and not Path(base_path).is_dir():
            raise ValueError(f"not a directory: {base_path}")
        return base_path

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.hidden % self.heads:
            raise ValueError(f"'hidden' ({self.hidden}) must be a multiple of 'heads' ({self.heads})")
        return self

    @property
    def trains_base(self) -> bool:
        return (not self.base_path) if self.train_base is None else self.train_base


DEFAULT_LM = LMSpec()


# Per-example LM gradients hold (batch, tokens, vocab) logits: gradient stores of an LM proxy
# compute this many examples at a time at most.
LM_GRADIENT_BATCH = 32


# ---------------------------------------------------------------------------------------------
# Tokenizer and encoding


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.exists():
        raise CurationError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(str(path))


def special_ids(tokenizer) -> tuple[int, int]:
    """(pad, eos) ids: ours, or the base tokenizer's EOS (which also pads; pads carry no loss)."""
    eos = tokenizer.token_to_id(EOS)
    if eos is None:
        for name in ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"):
            eos = tokenizer.token_to_id(name)
            if eos is not None:
                break
    if eos is None:
        raise CurationError("the tokenizer has no end-of-sequence token (<eos>, </s>, "
                            "<|endoftext|>)")
    pad = tokenizer.token_to_id(PAD)
    return (eos if pad is None else pad), eos


def lm_texts(pool: Pool) -> tuple[list[str] | None, list[str]]:
    """(prompts or None, texts or responses) of a pool, by its columns."""
    names = pool.table.column_names
    if "prompt" in names and "response" in names:
        prompts = pool.table.column("prompt").to_pylist()
        responses = pool.table.column("response").to_pylist()
        if any(not isinstance(v, str) for v in (*prompts, *responses)):
            raise CurationError(f"{pool.source}: columns 'prompt' and 'response' must be "
                                "non-null strings")
        if any(not r for r in responses):
            raise CurationError(f"{pool.source}: column 'response' has empty strings")
        return prompts, responses
    if pool.input_column != "text":
        raise CurationError(f"{pool.source}: a causal-lm proxy needs a 'text' column or "
                            "'prompt' and 'response' columns")
    return None, pool.texts


@lru_cache(maxsize=4)
def chat_template_tokenizer(base_path: str):
    """The ``transformers`` tokenizer of ``base_path`` when it has a chat template, else None."""
    directory = Path(base_path)
    if not ((directory / "chat_template.jinja").is_file() or
            "chat_template" in _json_or_empty(directory / "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path, local_files_only=True)


def _json_or_empty(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}


def chat_format(tokenizer, prompts: Sequence[str], responses: Sequence[str]
                ) -> tuple[list[str], list[str]]:
    """Prompts and responses through ``tokenizer``'s chat template: the prompt as a user turn
    up to the assistant's opening, the response as the assistant turn through its end marker.
    THE one place the template is applied: warm-up, gradients and evaluation all encode here."""
    heads, tails = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(head):
            raise CurationError("the base's chat template does not render the prompt as a "
                                "prefix of prompt + response; it cannot score responses")
        heads.append(head)
        tails.append(full[len(head):].rstrip("\n"))
    return heads, tails


def encode(tokenizer, texts: Sequence[str], max_length: int,
           prompts: Sequence[str] | None = None, append_eos: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, targets), both (n, max_length) int64; targets are -100 where no loss.
    ``append_eos=False`` when the texts already end in their end marker (a chat template's)."""
    pad, eos = special_ids(tokenizer)
    n = len(texts)
    ids = np.full((n, max_length), pad, dtype=np.int64)
    targets = np.full((n, max_length), IGNORE, dtype=np.int64)
    bodies = tokenizer.encode_batch(list(texts))
    heads = tokenizer.encode_batch(list(prompts)) if prompts is not None else [None] * n
    for i, (body, head) in enumerate(zip(bodies, heads, strict=True)):
        tokens = [*body.ids, eos] if append_eos else list(body.ids)
        prompt = head.ids if head is not None else []
        # The response keeps at least half the window; the prompt keeps its end.
        keep_response = min(len(tokens), max_length - min(len(prompt), max_length // 2))
        keep_prompt = min(len(prompt), max_length - keep_response)
        row = [*prompt[len(prompt) - keep_prompt:], *tokens[:keep_response]]
        ids[i, :len(row)] = row
        targets[i, keep_prompt:len(row)] = row[keep_prompt:]
    return ids, targets


# ---------------------------------------------------------------------------------------------
# Model and proxy


def build_model(spec: LMSpec, vocab_size: int, seed: int = 0) -> nn.Module:
    """The base model (random init from ``spec``, or ``spec.base_path``) with LoRA adapters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    init_seed(seed)
    if spec.base_path:
        # Local files only, and safetensors only: never a download, never a pickle.
        with _quiet_transformers():
            base = AutoModelForCausalLM.from_pretrained(spec.base_path, local_files_only=True,
                                                        use_safetensors=True, dtype=torch.float32)
    else:
        base = LlamaForCausalLM(base_config(spec, vocab_size))
    layers = base.config.num_hidden_layers
    if spec.lora_layers > layers:
        raise CurationError(f"causal-lm 'lora_layers' is {spec.lora_layers} but the base has "
                            f"{layers} layers")
    top = list(range(layers - spec.lora_layers, layers)) if spec.lora_layers else None
    lora = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0,
                      target_modules=list(spec.lora_targets), bias="none",
                      layers_to_transform=top, layers_pattern="layers" if top else None)
    try:
        model = get_peft_model(base, lora)
    except ValueError as exc:
        raise CurationError(f"causal-lm 'lora_targets' {list(spec.lora_targets)}: {exc}") from None
    if spec.trains_base:
        for param in model.parameters():
            param.requires_grad_(True)
    attach_prefix(model, spec)
    return model


def attach_prefix(model: nn.Module, spec: LMSpec) -> None:
    """Give ``model`` a cached frozen prefix (``model.frozen_prefix``) when its base is a
    frozen model directory under top-layer adapters; every loss and gradient then goes
    through it. A random base has none: its weights are the proxy's, not a shared identity."""
    from curation.proxies.lm_prefix import FrozenPrefix, frozen_prefix_layers

    start = frozen_prefix_layers(model) if spec.base_path and spec.lora_layers else 0
    model.frozen_prefix = FrozenPrefix(start, base_identity(spec.base_path)) if start else None


@lru_cache(maxsize=8)
def _identity(weights: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(weights))


def base_identity(base_path: str) -> str:
    """sha256 of a base directory's weights (cached per file size and mtime)."""
    files = sorted(Path(base_path).glob("*.safetensors"))
    if not files:
        raise CurationError(f"{base_path}: no *.safetensors weights")
    return ",".join(_identity(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def base_config(spec: LMSpec, vocab_size: int):
    """The ``transformers`` config of a random-init base model of ``spec``'s size."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads, max_position_embeddings=spec.max_length,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, use_cache=False,
        tie_word_embeddings=True, attn_implementation="sdpa")


@config("pre-training")
class PretrainConfig:
    """Pre-training of a base model from scratch on a general corpus (full-model Adam)."""

    epochs: int = Field(default=2, gt=0, description="Epochs over the corpus.")
    lr: float = Field(default=2e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(default=16, gt=0, description="Documents per step.")
    seed: int = Field(default=0, description="Seed of the initialization and batch order.")


DEFAULT_PRETRAIN = PretrainConfig()


def pretrain_base(texts: Sequence[str], out_dir: str | Path, spec: LMSpec = DEFAULT_LM,
                  config: PretrainConfig = DEFAULT_PRETRAIN, progress: bool = False) -> Path:
    """Train a tokenizer and a base model of ``spec``'s size on ``texts``; save both under
    ``out_dir`` as a local model directory (``save_pretrained`` + ``tokenizer.json``) that
    ``LMSpec(base_path=...)`` opens. Written to a temp directory, then renamed into place."""
    import shutil

    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    if not texts:
        raise CurationError("pre-training needs at least one text")
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    ids, targets = encode(tokenizer, texts, spec.max_length)
    init_seed(config.seed)
    device = lm_device()
    model = LlamaForCausalLM(base_config(spec, tokenizer.get_vocab_size())).to(device)
    x, y = torch.from_numpy(ids), torch.from_numpy(targets)
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    model.train()
    with tqdm(total=steps, desc="pre-training base LM", disable=not progress) as bar:
        train(model, model.parameters(),
              lambda batch: lm_batch_loss(model, x[batch].to(device), y[batch].to(device)),
              len(x), batch_size=config.batch_size, epochs=config.epochs, seed=config.seed,
              lr=config.lr, on_step=bar.update)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save(str(tmp / "tokenizer.json"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def cached_base(work_dir: str | Path, texts: Sequence[str], spec: LMSpec = DEFAULT_LM,
                config: PretrainConfig = DEFAULT_PRETRAIN, progress: bool = False) -> Path:
    """``pretrain_base`` under ``work_dir/lm-bases/<hash of corpus, size, config>``, reused when
    the same corpus, model size and config were pre-trained before."""
    import hashlib

    from curation.lineage import config_hash

    corpus = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    size = {k: v for k, v in asdict(spec).items() if k not in ("base_path", "train_base")}
    directory = Path(work_dir) / "lm-bases" / config_hash(
        {"corpus": corpus, "size": size, "pretrain": asdict(config)})
    if (directory / "tokenizer.json").exists():
        return directory
    return pretrain_base(texts, directory, spec, config, progress)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-tensor progress bars: a proxy loads its base once per checkpoint."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def adapter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if "lora_" in n]


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train: what an LM checkpoint stores (the base is stored once)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def lm_example_loss(output, target: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of one example (batch of one) over its target tokens."""
    logits = output.logits[0, :-1]
    return nn.functional.cross_entropy(logits, target[1:], ignore_index=IGNORE)


def lm_batch_loss(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of a batch over its target tokens: ``mean``, ``sum``, or
    ``none`` ((batch * (tokens - 1),), zero where no target). Through the model's frozen
    prefix when it has one (the same value, computed from cached states)."""
    prefix = getattr(model, "frozen_prefix", None)
    if prefix is not None:
        return prefix.batch_loss(model, ids, targets, reduction)
    logits = model(input_ids=ids).logits[:, :-1]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       targets[:, 1:].reshape(-1), ignore_index=IGNORE,
                                       reduction=reduction)


@dataclass(frozen=True)
class ChoiceSet:
    """Every (prompt, choice) pair of a multiple-choice test split, encoded: pair ``k`` belongs
    to test row ``owner[k]``, whose gold choice is ``labels[owner[k]]`` (its index there)."""

    ids: np.ndarray
    targets: np.ndarray
    owner: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class LMProxy:
    """A warmed-up causal-LM proxy: spec, tokenizer, base weights and adapter checkpoints.

    Offers the interface the gradient datastore uses (``checkpoints``, ``load_model``,
    ``load_moments``, ``gradient_parameters``, ``example_loss``, ``batch``), so LoRA gradient
    stores are built by the same code as classifier ones.
    """

    spec: LMSpec
    directory: Path
    vocab_size: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    base_sha256: str = ""
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @property
    def in_dim(self) -> int:
        """Columns of the datastore's inputs: token positions."""
        return self.spec.max_length

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def base_weights(self) -> Path:
        return self.directory / "base.safetensors"

    def tokenizer(self):
        return load_tokenizer(self.tokenizer_path)

    def encode(self, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
        prompts, texts = lm_texts(pool)
        return self.encode_texts(texts, prompts)

    def encode_texts(self, texts: Sequence[str], prompts: Sequence[str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and targets of (prompt, response) pairs or plain texts, through the base's
        chat template when it has one (``chat_format``)."""
        chat = chat_template_tokenizer(self.spec.base_path) if self.spec.base_path else None
        if chat is not None and prompts is not None:
            prompts, texts = chat_format(chat, prompts, texts)
            return encode(self.tokenizer(), texts, self.spec.max_length, prompts,
                          append_eos=False)
        return encode(self.tokenizer(), texts, self.spec.max_length, prompts)

    def encode_choices(self, pool: Pool) -> ChoiceSet | None:
        """Every (prompt, choice) pair of a test split with ``choices``, or None without them."""
        if "choices" not in pool.table.column_names:
            return None
        prompts, _ = lm_texts(pool)
        if prompts is None:
            raise CurationError(f"{pool.source}: column 'choices' needs 'prompt' and 'response' "
                                "columns")
        choices = pool.table.column("choices").to_pylist()
        owner = np.repeat(np.arange(len(choices)), [len(c) for c in choices])
        ids, targets = self.encode_texts([c for row in choices for c in row],
                                         [prompts[i] for i in owner])
        return ChoiceSet(ids, targets, owner, pool.labels)

    def load_model(self, checkpoint: Checkpoint | None = None) -> nn.Module:
        """The model at ``checkpoint`` (None: the initial weights), in eval mode."""
        model = build_model(self.spec, self.vocab_size)
        if not self.spec.base_path:
            _load_into(model, load_file(self.base_weights), self.base_weights)
        if checkpoint is not None:
            _load_into(model, load_file(checkpoint.model_path), checkpoint.model_path)
        return model.to(lm_device()).eval()

    def load_moments(self, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
        return load_file(checkpoint.optimizer_path)

    def gradient_parameters(self, model: nn.Module, which: str | Sequence[str] = "all"
                            ) -> list[str]:
        """Adapter parameters whose gradients are recorded: ``all``, ``last`` (the last
        layer's adapters) or explicit names."""
        names = adapter_names(model)
        if which == "all":
            return names
        if which == "last":
            last = max(int(n.split(".layers.")[1].split(".")[0]) for n in names)
            return [n for n in names if f".layers.{last}." in n]
        unknown = sorted(set(which) - set(names))
        if unknown:
            raise CurationError(f"unknown adapter parameter names {unknown[:3]}; the adapters "
                                f"are {names[:3]}...")
        return list(which)

    @staticmethod
    def example_loss(output, target: torch.Tensor) -> torch.Tensor:
        return lm_example_loss(output, target)

    @staticmethod
    def batch_gradients(models: Sequence[nn.Module], names: Sequence[str], ids: torch.Tensor,
                        targets: torch.Tensor) -> Iterator[list[torch.Tensor]]:
        """Per checkpoint model, the per-example gradient blocks of a batch: through the
        frozen prefix when the models have one (its states computed once for all of them)."""
        from curation.gradients import per_example_gradient_blocks  # imports curation.proxies

        prefix = getattr(models[0], "frozen_prefix", None)
        if prefix is not None:
            yield from prefix.gradient_blocks(models, names, ids, targets)
            return
        for model in models:
            yield per_example_gradient_blocks(model, names, ids, targets, lm_example_loss)

    @staticmethod
    def batch(inputs: np.ndarray, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        device = lm_device()
        return (torch.from_numpy(np.asarray(inputs, dtype=np.int64)).to(device),
                torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(device))

    def save(self) -> Path:
        record = {
            "spec": asdict(self.spec), "vocab_size": self.vocab_size,
            "base_sha256": self.base_sha256, "betas": list(self.betas), "eps": self.eps,
            "checkpoints": checkpoint_records(self.checkpoints),
        }
        return write_json(self.directory / "proxy.json", record)


def load_lm_proxy(directory: str | Path) -> LMProxy:
    """Open a proxy saved by ``warmup_lm``; weight files are verified by sha256."""
    directory = Path(directory)
    record, checkpoints = read_proxy_record(directory)
    if record.get("spec", {}).get("kind") != LM_KIND:
        raise CurationError(f"{directory / 'proxy.json'}: not a {LM_KIND} proxy")
    spec = LMSpec(**record["spec"])
    proxy = LMProxy(spec, directory, record["vocab_size"], checkpoints, record["base_sha256"],
                    tuple(record["betas"]), record["eps"])
    if not spec.base_path and sha256_file(proxy.base_weights) != proxy.base_sha256:
        raise CurationError(f"{proxy.base_weights} does not match its sha256")
    return proxy


# A transformer needs a smaller step and more data than a linear head to learn anything.
LM_WARMUP = WarmupConfig(fraction=0.25, lr=2e-3, batch_size=8)
# On a frozen pre-trained base only adapters warm up, as in LESS: 5% of the pool; the warm-up
# only shapes the gradient features, subsets fine-tune from the base (LMEvalConfig.start).
LM_BASE_WARMUP = WarmupConfig(fraction=0.05, lr=1e-3, batch_size=8)


def warmup_lm(pool: Pool, out_dir: str | Path, spec: LMSpec = DEFAULT_LM,
              config: WarmupConfig = LM_WARMUP, progress: bool = False) -> LMProxy:
    """Build the tokenizer and model, warm up on a seeded fraction of ``pool``, save under
    ``out_dir``: tokenizer, base weights, then adapter (+ base) checkpoints with Adam moments."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts, texts = lm_texts(pool)
    tokenizer_path = out_dir / "tokenizer.json"
    if spec.base_path:
        tokenizer = load_tokenizer(Path(spec.base_path) / "tokenizer.json")
    else:
        training_text = texts if prompts is None else [p + r for p, r in zip(prompts, texts,
                                                                              strict=True)]
        tokenizer = train_tokenizer(training_text, spec.vocab_size)
    with atomic_path(tokenizer_path) as tmp:
        tokenizer.save(str(tmp))
    vocab_size = tokenizer.get_vocab_size()
    ids, targets = encode(tokenizer, texts, spec.max_length, prompts)

    rng = numpy_rng(config.seed)
    n_train = max(1, int(round(config.fraction * len(ids))))
    subset = np.sort(rng.choice(len(ids), size=min(n_train, len(ids)), replace=False))
    x, y = torch.from_numpy(ids[subset]), torch.from_numpy(targets[subset])

    model = build_model(spec, vocab_size, seed=config.seed)
    base_sha = ""
    if not spec.base_path:
        base = out_dir / "base.safetensors"
        state = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()
                 if "lora_" not in n}
        with atomic_path(base) as tmp:
            save_file(state, str(tmp))
        base_sha = sha256_file(base)
    device = lm_device()
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    betas = (0.9, 0.999)
    snapshot_at = set(checkpoint_epochs(config.epochs, config.checkpoints))
    if config.initial_checkpoint:
        snapshot_at.add(0)
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    with tqdm(total=steps, desc="warm-up (causal-lm)", disable=not progress) as bar:
        checkpoints = train(
            model, trainable,
            lambda batch: lm_batch_loss(model, x[batch].to(device), y[batch].to(device)), len(x),
            batch_size=config.batch_size, epochs=config.epochs, seed=config.seed, lr=config.lr,
            weight_decay=config.weight_decay, betas=betas, out_dir=out_dir,
            snapshot_at=snapshot_at, snapshot_weights=trainable_state, on_step=bar.update)
    proxy = LMProxy(spec, out_dir, vocab_size, checkpoints, base_sha, betas, 1e-8)
    proxy.save()
    return proxy


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CurationError(f"{source}: unexpected tensors {unexpected[:3]} for this model")


# ---------------------------------------------------------------------------------------------
# Evaluation


@config("causal-lm evaluation")
class LMEvalConfig:
    """Fine-tuning of the warm-started proxy on a subset, the same for every selector."""

    epochs: int = Field(default=3, gt=0, description="Fine-tuning epochs on the subset.")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(default=8, gt=0, description="Examples per step.")
    eval_batch_size: int = Field(default=32, gt=0, description="Examples per held-out batch.")
    start: choice(("auto", "warmup", "base")) = Field(default="auto", description=(
        "What each subset fine-tunes from: the warm-up's last checkpoint, or the base with "
        "fresh adapters (as LESS trains its final models) [auto: base on a frozen pre-trained "
        "base, else warmup]."))

    def starts_from_base(self, spec: LMSpec) -> bool:
        if self.start == "auto":
            return bool(spec.base_path) and not spec.trains_base
        return self.start == "base"


DEFAULT_LM_EVAL = LMEvalConfig()


def loss_scores(loss: float) -> dict[str, float]:
    """A held-out mean token loss and its perplexity, as results report them."""
    return {"test_loss": loss, "test_perplexity": float(math.exp(min(loss, 700.0)))}


def token_loss(model: nn.Module, ids: np.ndarray, targets: np.ndarray,
               batch_size: int = 32) -> float:
    """Mean next-token loss over every target token of ``ids`` (token-weighted)."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = torch.from_numpy(ids[start:start + batch_size]).to(device)
            y = torch.from_numpy(targets[start:start + batch_size]).to(device)
            total += float(lm_batch_loss(model, x, y, reduction="sum"))
            count += int((y[:, 1:] != IGNORE).sum())
    if count == 0:
        raise CurationError("held-out set has no target tokens to score")
    return total / count


def sequence_log_likelihoods(model: nn.Module, ids: np.ndarray, targets: np.ndarray,
                             batch_size: int = 32) -> np.ndarray:
    """Per sequence: the mean log-probability of its target tokens (length-normalized)."""
    device = next(model.parameters()).device
    out = np.empty(len(ids))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = torch.from_numpy(ids[start:start + batch_size]).to(device)
            y = torch.from_numpy(targets[start:start + batch_size]).to(device)
            per_token = lm_batch_loss(model, x, y, reduction="none").reshape(len(x), -1)
            valid = (y[:, 1:] != IGNORE)
            mean = (per_token * valid).sum(1) / valid.sum(1).clamp_min(1)
            out[start:start + len(x)] = (-mean).cpu().numpy()
    return out


def choice_accuracy(model: nn.Module, choices: ChoiceSet, batch_size: int = 32) -> float:
    """Share of test rows whose gold choice has the highest length-normalized log-likelihood
    (ties go to the first choice)."""
    scores = sequence_log_likelihoods(model, choices.ids, choices.targets, batch_size)
    counts = np.bincount(choices.owner, minlength=len(choices.labels))
    starts = np.r_[0, np.cumsum(counts)[:-1]]  # a row's pairs are contiguous (encode_choices)
    picked = np.array([np.argmax(scores[s:s + c]) for s, c in zip(starts, counts, strict=True)])
    return float(np.mean(picked == choices.labels))


def held_out_scores(model: nn.Module, test_ids: np.ndarray, test_targets: np.ndarray,
                choices: ChoiceSet | None, batch_size: int = 32) -> dict[str, float]:
    """THE LM test metrics of one model: ``test_loss`` (mean per-token loss of the gold
    responses), ``test_perplexity`` and, with ``choices``, ``test_accuracy``."""
    scores = loss_scores(token_loss(model, test_ids, test_targets, batch_size))
    if choices is not None:
        scores["test_accuracy"] = choice_accuracy(model, choices, batch_size)
    return scores


def finetune_perplexity(proxy: LMProxy, ids: np.ndarray, targets: np.ndarray,
                        test_ids: np.ndarray, test_targets: np.ndarray,
                        config: LMEvalConfig = DEFAULT_LM_EVAL, seed: int = 0,
                        weights: np.ndarray | None = None,
                        choices: ChoiceSet | None = None) -> dict[str, float]:
    """Fine-tune the proxy's last checkpoint (or its base, ``config.start``) on (ids,
    targets); held-out ``held_out_scores``.

    ``weights`` (one per example) scale each example's loss; None trains unweighted.
    """
    if len(ids) == 0:
        raise CurationError("cannot fine-tune on an empty subset")
    init_seed(seed)
    model = proxy.load_model(None if config.starts_from_base(proxy.spec)
                             else proxy.checkpoints[-1])
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    x, y = torch.from_numpy(ids).to(device), torch.from_numpy(targets).to(device)
    w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32),
                                                     device=device)

    def loss_of_batch(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device)
        if w is None:
            return lm_batch_loss(model, x[batch], y[batch])
        per_token = lm_batch_loss(model, x[batch], y[batch], reduction="none")
        valid = (y[batch][:, 1:] != IGNORE).reshape(len(batch), -1)
        per_example = (per_token.reshape(len(batch), -1) * valid).sum(1) / valid.sum(1)
        return (per_example * w[batch]).sum() / w[batch].sum().clamp_min(1e-12)

    model.train()
    train(model, params, loss_of_batch, len(x), batch_size=config.batch_size,
          epochs=config.epochs, seed=seed, lr=config.lr)
    return {**held_out_scores(model, test_ids, test_targets, choices, config.eval_batch_size),
            "n_train": len(ids)}


def cached_lm_proxy(work_dir: Path, pool: Pool, settings, progress: bool = False) -> LMProxy:
    """Warm up a causal-LM proxy (tokenizer included) on the pool, or reuse the same one."""
    from curation.lineage import config_hash

    key = config_hash({"pool_id": pool.content_hash, "proxy": asdict(settings.proxy),
                       "warmup": asdict(settings.warmup)})
    directory = Path(work_dir) / "proxies" / key
    if (directory / "proxy.json").exists():
        return load_lm_proxy(directory)
    return warmup_lm(pool, directory, settings.proxy, settings.warmup, progress)


def lm_settings(work_dir: Path, pool: Pool, target: Pool | None, *, checkpoints: int = 3,
                dim: int | None = None, seed: int = 0, base: str | Path | None = None,
                pretrain_docs: int = 0, train_base: bool | None = None,
                warmup: WarmupConfig | None = None, progress: bool = False):
    """Settings of a causal-LM proxy: on ``base`` (a named base of ``curation.lm_bases``, with
    its adapter options, or a local model directory), else on a base
    pre-trained here on ``pretrain_docs`` 20 Newsgroups documents outside the pool and target
    (cached), else (``pretrain_docs=0``) on a random-init base. ``warmup`` replaces the default
    LM warm-up (``LM_WARMUP`` with ``checkpoints`` and ``seed``)."""
    from dataclasses import replace

    from curation.datastore import DatastoreSpec
    from curation.demo_data import pretraining_corpus
    from curation.lm_bases import adapter_options, resolve_lm_base
    from curation.workflow import GradientSettings

    adapters = adapter_options(base)
    base = resolve_lm_base(base)
    if base is None and pretrain_docs > 0:
        exclude = [*pool.ids, *(target.ids if target is not None else [])]
        base = cached_base(work_dir, pretraining_corpus(pretrain_docs, exclude), LMSpec(),
                           progress=progress)
    spec = LMSpec(base_path=str(base or ""), train_base=train_base, **adapters)
    frozen_base = bool(base) and not spec.trains_base
    warmup = warmup or replace(LM_BASE_WARMUP if frozen_base else LM_WARMUP,
                               epochs=max(3, checkpoints), checkpoints=checkpoints, seed=seed)
    datastore = DatastoreSpec(dim=default_of(DatastoreSpec, "dim") if dim is None else dim, seed=seed,
                              batch_size=LM_GRADIENT_BATCH)
    return GradientSettings(spec, warmup, datastore)


def perplexity_metrics(losses: Sequence[float]) -> dict[str, float]:
    """THE definition of the LM metrics, for one seed or several: ``test_loss`` is the mean over
    seeds of the held-out token-level next-token loss (``token_loss``), ``test_perplexity`` is
    ``exp(test_loss)`` (the geometric mean of the per-seed perplexities)."""
    return loss_scores(float(np.mean(losses)))


class LMScorer:
    """The warmed-up LM's last checkpoint fine-tuned on each subset (``finetune_perplexity``),
    per seed, scored by ``perplexity_metrics`` (plus ``test_accuracy`` when the test split has
    ``choices``); ``untrained`` scores the warmed-up proxy, ``reference`` the base model."""

    def __init__(self, data: EvalData, proxy: LMProxy, evaluation, lm_evaluation: LMEvalConfig
                 ) -> None:
        self.proxy, self.evaluation, self.lm_evaluation = proxy, evaluation, lm_evaluation
        self.ids, self.targets = proxy.encode(data.pool)
        self.test_ids, self.test_targets = proxy.encode(data.test)
        self.choices = proxy.encode_choices(data.test)

    def score(self, rows: np.ndarray, weights: np.ndarray | None,
              seeds: Sequence[int]) -> SubsetScore:
        use = weights if self.evaluation is not None and self.evaluation.use_weights else None
        runs = [finetune_perplexity(self.proxy, self.ids[rows], self.targets[rows],
                                    self.test_ids, self.test_targets, self.lm_evaluation,
                                    seed, use, self.choices) for seed in seeds]
        losses = [run["test_loss"] for run in runs]
        metrics = perplexity_metrics(losses)
        perplexities = [loss_scores(loss)["test_perplexity"] for loss in losses]
        summary = {**metrics, "test_perplexity_mean": metrics["test_perplexity"],
                   "test_perplexity_std": float(np.std(perplexities)),
                   "test_perplexities": perplexities, "test_losses": losses, "n_train": len(rows),
                   "proxy": str(self.proxy.directory)}
        if self.choices is not None:
            accuracies = [run["test_accuracy"] for run in runs]
            metrics["test_accuracy"] = float(np.mean(accuracies))
            summary.update(test_accuracy=metrics["test_accuracy"], test_accuracies=accuracies,
                           test_accuracy_std=float(np.std(accuracies)))
        return SubsetScore(metrics, perplexities, len(rows), summary)

    def _scores(self, checkpoint: Checkpoint | None) -> dict[str, float]:
        return held_out_scores(self.proxy.load_model(checkpoint), self.test_ids, self.test_targets,
                           self.choices, self.lm_evaluation.eval_batch_size)

    def untrained(self) -> dict[str, float]:
        return self._scores(self.proxy.checkpoints[-1])

    def reference(self) -> dict[str, float]:
        """The base model before any warm-up or fine-tuning (LoRA adapters start at zero)."""
        return self._scores(None)


class CausalLMKind(ProxyKind):
    """``causal-lm``: a small transformer LM with LoRA adapters over the pool's text."""

    name = LM_KIND
    help = ("a small transformer LM with LoRA adapters; selection by LoRA gradients, scored by "
            "perplexity")
    needs_labels = False
    takes_base = True
    unsupported_needs = frozenset({"proxy"})
    metric, metric_label, lower_is_better = "test_perplexity", "perplexity", True
    default_checkpoints = 3
    default_warmup = LM_WARMUP
    benchmark_scenario = {"pool_size": 1500, "test_size": 400, "titled": True}

    def spec(self, **options) -> LMSpec:
        return LMSpec(**options)

    def settings(self, work_dir, pool, target, *, checkpoints=None, dim=None, seed=0,
                 spec_options=None, warmup=None, base=None, pretrain_docs=0, train_base=None,
                 progress=False):
        return lm_settings(work_dir, pool, target, checkpoints=checkpoints or
                           self.default_checkpoints, dim=dim, seed=seed, base=base,
                           pretrain_docs=pretrain_docs, train_base=train_base, warmup=warmup,
                           progress=progress)

    def prepare(self, work_dir, pool, target, settings, progress=False, inputs=None,
                n_classes=None):
        proxy = cached_lm_proxy(work_dir, pool, settings, progress)
        splits = {"pool": proxy.encode(pool)}
        if target is not None:
            splits["target"] = proxy.encode(target)
        return proxy, splits

    def load(self, directory) -> LMProxy:
        return load_lm_proxy(directory)

    def store_inputs(self, proxy, split, inputs_path):
        return proxy.encode(split)

    def store_spec(self, spec):
        from dataclasses import replace

        return replace(spec, batch_size=min(spec.batch_size, LM_GRADIENT_BATCH))

    def scorer(self, data, proxy=None, settings=None, evaluation=None, lm_evaluation=None):
        if proxy is None:
            proxy = cached_lm_proxy(data.work_dir, data.pool, settings, data.progress)
        return LMScorer(data, proxy, evaluation, lm_evaluation or LMEvalConfig())

    def checkpoint_report(self, proxy, test, test_inputs) -> list[dict]:
        test_ids, test_targets = proxy.encode(test)
        return [{"epoch": c.epoch, "step": c.step, "sha256": c.sha256[:12],
                 **loss_scores(token_loss(proxy.load_model(c), test_ids, test_targets))}
                for c in proxy.checkpoints]

    def describe(self, proxy) -> dict:
        return {"vocab_size": proxy.vocab_size}


CAUSAL_LM = CausalLMKind()
