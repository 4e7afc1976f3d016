"""A frozen prefix under top-layer LoRA adapters: computed once per sequence, reused everywhere.

With a frozen pre-trained base and adapters only on its top ``lora_layers`` layers
(``LMSpec.lora_layers``), everything below the first adapted layer is the same function of the
token ids at every checkpoint, in every fine-tune and in every evaluation. This module splits
such a model at that layer:

- the **prefix** (embeddings and the frozen layers) runs once per distinct sequence, under
  ``no_grad``; its output, the hidden states entering the first adapted layer, is kept in a
  process-wide cache bounded in bytes (``$CURATION_PREFIX_CACHE_MB``, default 4096; least
  recently used sequences go first);
- the **head** (the adapted layers, the final norm, the LM head) runs on those states, and the
  LM head only at positions whose next token carries loss: on a 49k-token vocabulary the LM head
  costs about seven decoder layers per position, and instruction responses are a few tokens.

Per-example gradients of linear layers (LoRA's A and B) come from one batched backward through
the head, each example's weight gradient an ``einsum`` of its layer inputs and output gradients
(``linear_gradient_blocks``); any other recorded parameter falls back to ``torch.func.vmap``
over ``grad`` (``head_gradient_blocks``), as in ``curation.gradients``. The prefix states of a
batch are computed once and shared by every checkpoint. The split is exact: the head computes
what the full model computes (``tests/core/test_lm_prefix.py`` checks losses and gradients).

Why written here: ``transformers`` has no public "resume the forward at layer L" entry point,
so the head calls the decoder layers itself with the same causal mask and rotary embeddings
``LlamaModel.forward`` builds (``create_causal_mask``, ``rotary_emb``).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

IGNORE = -100
PREFIX_CACHE_MB = 4096


def decoder_of(model: nn.Module) -> nn.Module:
    """The ``LlamaModel``-like decoder (embeddings, layers, norm, rotary) inside ``model``."""
    lm = causal_lm_of(model)
    return lm.model


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The ``*ForCausalLM`` module inside a peft wrapper (or ``model`` itself)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not (hasattr(inner, "model") and hasattr(inner, "lm_head")):
        raise TypeError(f"{type(inner).__name__} is not a decoder-only causal LM")
    return inner


def frozen_prefix_layers(model: nn.Module) -> int:
    """How many bottom layers (embeddings included) have no trainable parameter: the split
    point. 0 when the embeddings train (then nothing can be cached)."""
    decoder = decoder_of(model)
    if any(p.requires_grad for p in decoder.embed_tokens.parameters()):
        return 0
    count = 0
    for layer in decoder.layers:
        if any(p.requires_grad for p in layer.parameters()):
            break
        count += 1
    return count


def run_layers(decoder: nn.Module, layers: Sequence[nn.Module], hidden: torch.Tensor
               ) -> torch.Tensor:
    """``layers`` of ``decoder`` on ``hidden`` (batch, tokens, width), causal attention from
    position 0: the mask and rotary embeddings ``LlamaModel.forward`` builds for unpadded ids."""
    from transformers.masking_utils import create_causal_mask

    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=decoder.config, inputs_embeds=hidden, attention_mask=None,
                              past_key_values=None, position_ids=positions)
    rotary = decoder.rotary_emb(hidden, position_ids=positions)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary,
                       position_ids=positions)
    return hidden


class LMHead(nn.Module):
    """The adapted top of a split causal LM: layers ``start:``, final norm, LM head. Holds the
    model's own modules (no copy), so its parameters are the model's parameters."""

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        lm = causal_lm_of(model)
        self.config = lm.model.config
        self.layers = nn.ModuleList(list(lm.model.layers)[start:])
        self.norm, self.lm_head, self.rotary_emb = lm.model.norm, lm.lm_head, lm.model.rotary_emb

    def final(self, hidden: torch.Tensor) -> torch.Tensor:
        """The normalized last hidden states (batch, tokens, width) of prefix states."""
        return self.norm(run_layers(self, self.layers, hidden))

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (batch, len(positions[b]), vocab) at ``positions`` (batch, R) only."""
        hidden = self.final(hidden)
        picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return self.lm_head(picked)


def sequence_lengths(targets: np.ndarray | torch.Tensor) -> np.ndarray:
    """Real length of each right-padded row: one past its last target token (or the whole
    row when no token has a target)."""
    has = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets) != IGNORE
    last = has.shape[1] - 1 - np.argmax(has[:, ::-1], axis=1)
    return np.where(has.any(1), last + 1, has.shape[1])


def loss_positions(targets: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, labels), both (batch, R): for each row, the positions whose next token has
    a target and that token, padded to the batch's longest with position 0 / ``IGNORE``."""
    valid = targets[:, 1:length] != IGNORE
    counts = valid.sum(1)
    width = max(int(counts.max()), 1)
    positions = torch.zeros(len(targets), width, dtype=torch.long, device=targets.device)
    labels = torch.full_like(positions, IGNORE)
    rows, cols = valid.nonzero(as_tuple=True)
    slot = torch.cumsum(valid.long(), 1)[rows, cols] - 1
    positions[rows, slot] = cols
    labels[rows, slot] = targets[rows, cols + 1]
    return positions, labels


def flat_targets(targets: torch.Tensor, length: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, positions, labels), each (M,): every position of the batch whose next token has
    a target, and that token; no padding, so the LM head runs exactly M times."""
    valid = targets[:, 1:length] != IGNORE
    rows, positions = valid.nonzero(as_tuple=True)
    return rows, positions, targets[rows, positions + 1]


class PrefixCache:
    """Prefix hidden states by sequence (its token ids), least recently used out first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.states: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: bytes) -> torch.Tensor | None:
        state = self.states.get(key)
        if state is not None:
            self.states.move_to_end(key)
        return state

    def put(self, key: bytes, state: torch.Tensor) -> None:
        size = state.numel() * state.element_size()
        if size > self.max_bytes or key in self.states:
            return
        self.states[key] = state
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.states.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


_CACHES: dict[str, PrefixCache] = {}


def prefix_cache(identity: str) -> PrefixCache:
    """The process-wide cache of one prefix (a base model and a split layer)."""
    if identity not in _CACHES:
        megabytes = float(os.environ.get("CURATION_PREFIX_CACHE_MB", PREFIX_CACHE_MB))
        _CACHES[identity] = PrefixCache(int(megabytes * 2**20))
    return _CACHES[identity]


class FrozenPrefix:
    """A causal LM split after its frozen bottom ``start`` layers: cached prefix states, head
    losses and per-example head gradients. ``identity`` names the base weights (the cache key
    of their states); models of every checkpoint of one proxy share it."""

    def __init__(self, start: int, identity: str) -> None:
        self.start = start
        self.cache = prefix_cache(f"{identity}:{start}")

    def states(self, model: nn.Module, ids: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
        """(batch, max(lengths), width) states entering layer ``start``; rows are cut to their
        length (right padding changes no real position under causal attention), computed for
        the rows not in the cache, in one batch."""
        width = decoder_of(model).config.hidden_size
        longest = int(lengths.max())
        out = torch.zeros(len(ids), longest, width, device=ids.device)
        rows = ids.cpu().numpy()
        keys = [hashlib.blake2b(rows[i, :lengths[i]].tobytes(), digest_size=16).digest()
                for i in range(len(rows))]
        missing = []
        for i, key in enumerate(keys):
            state = self.cache.get(key)
            if state is None:
                missing.append(i)
            else:
                out[i, :lengths[i]] = state.to(ids.device)
        self.cache.hits += len(keys) - len(missing)
        self.cache.misses += len(missing)
        if missing:
            fresh = self._prefix(model, ids[missing, :int(lengths[missing].max())])
            for j, i in enumerate(missing):
                out[i, :lengths[i]] = fresh[j, :lengths[i]]
                self.cache.put(keys[i], fresh[j, :lengths[i]].clone())
        return out

    def _prefix(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        decoder = decoder_of(model)
        with torch.no_grad():
            hidden = decoder.embed_tokens(ids)
            return run_layers(decoder, list(decoder.layers)[:self.start], hidden)

    def batch_loss(self, model: nn.Module, ids: torch.Tensor, targets: torch.Tensor,
                   reduction: str = "mean") -> torch.Tensor:
        """``lm_batch_loss`` through the cached prefix: the same value, with logits only where a
        next token has a target. ``none`` gives (batch * (tokens - 1),) like the full model."""
        hidden = self.states(model, ids, sequence_lengths(targets))
        head = LMHead(model, self.start)
        rows, positions, labels = flat_targets(targets, hidden.shape[1])
        logits = head.lm_head(head.final(hidden)[rows, positions])
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        if reduction == "sum":
            return losses.sum()
        if reduction == "mean":
            return losses.sum() / max(len(losses), 1)
        per_token = torch.zeros(len(ids), ids.shape[1] - 1, device=ids.device,
                                dtype=losses.dtype)
        per_token[rows, positions] = losses
        return per_token.reshape(-1)

    def gradient_blocks(self, models: Sequence[nn.Module], names: Sequence[str],
                        ids: torch.Tensor, targets: torch.Tensor
                        ) -> Iterator[list[torch.Tensor]]:
        """Per checkpoint model, per-example gradients of each example's mean next-token loss:
        one (batch, numel) block per parameter in ``names`` order, as
        ``curation.gradients.per_example_gradient_blocks`` gives them. The prefix states are
        computed (or read from the cache) once for all models."""
        hidden = self.states(models[0], ids, sequence_lengths(targets))
        for model in models:
            head = LMHead(model, self.start)
            linears = recorded_linears(head, model, names)
            if linears is not None:
                yield linear_gradient_blocks(head, linears, hidden, targets)
            else:
                positions, labels = loss_positions(targets, hidden.shape[1])
                yield head_gradient_blocks(head, model, names, hidden, positions, labels)


def head_gradient_blocks(head: LMHead, model: nn.Module, names: Sequence[str],
                         hidden: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor
                         ) -> list[torch.Tensor]:
    """``vmap(grad)`` of one example's head loss over the batch; ``names`` are ``model``'s
    parameter names (each must live in the head)."""
    local = {id(p): n for n, p in head.named_parameters()}
    full = dict(model.named_parameters())
    missing = [n for n in names if id(full[n]) not in local]
    if missing:
        raise ValueError(f"parameters {missing[:3]} are below the frozen prefix")
    recorded = {local[id(full[n])]: full[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in head.named_parameters() if n not in recorded}
    buffers = dict(head.named_buffers())

    def loss(p: dict[str, torch.Tensor], h: torch.Tensor, pos: torch.Tensor,
             lab: torch.Tensor) -> torch.Tensor:
        logits = functional_call(head, {**frozen, **p, **buffers}, (h[None], pos[None]))
        return nn.functional.cross_entropy(logits[0], lab, ignore_index=IGNORE)

    grads = vmap(grad(loss), in_dims=(None, 0, 0, 0))(recorded, hidden, positions, labels)
    return [grads[local[id(full[n])]].reshape(len(hidden), -1) for n in names]


def recorded_linears(head: LMHead, model: nn.Module, names: Sequence[str]
                     ) -> list[tuple[nn.Linear, str]] | None:
    """(module, "weight" or "bias") of each name, in order, when every recorded parameter is
    a weight or bias of an ``nn.Linear`` in the head (LoRA's A and B are); else None."""
    owner = {}
    for module in head.modules():
        if isinstance(module, nn.Linear):
            owner[id(module.weight)] = (module, "weight")
            if module.bias is not None:
                owner[id(module.bias)] = (module, "bias")
    full = dict(model.named_parameters())
    found = [owner.get(id(full[n])) for n in names]
    return None if any(f is None for f in found) else found


def linear_gradient_blocks(head: LMHead, linears: list[tuple[nn.Linear, str]],
                           hidden: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
    """Per-example gradients of each example's mean next-token loss with respect to linear
    layers' weights (biases), one (batch, numel) block each, from ONE batched backward.

    Why not ``vmap(grad)`` here: it needs the same number of loss positions in every example,
    so the LM head runs at the longest response's length for all of them (measured: 7.0 s
    against 1.6 s for the forward of 32 instruction rows). Examples do not interact (causal
    attention within a row, per-token norms), so the batch gradient at a linear layer's output
    is each example's own gradient there, and that example's weight gradient is the sum over
    its tokens of output gradient times input (``einsum``).
    """
    modules = list({id(m): m for m, _ in linears}.values())
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        inputs[id(module)], outputs[id(module)] = args[0], output

    hooks = [m.register_forward_hook(keep) for m in modules]
    try:
        with torch.enable_grad():
            rows, positions, labels = flat_targets(targets, hidden.shape[1])
            logits = head.lm_head(head.final(hidden)[rows, positions])
            losses = nn.functional.cross_entropy(logits, labels, reduction="none")
            # Each example's loss is its mean over its own target tokens.
            counts = torch.bincount(rows, minlength=len(hidden)).clamp_min(1)
            total = (losses / counts[rows]).sum()
            grads = torch.autograd.grad(total, [outputs[id(m)] for m in modules])
    finally:
        for hook in hooks:
            hook.remove()
    output_grads = {id(m): g for m, g in zip(modules, grads, strict=True)}
    blocks = []
    for module, which in linears:
        dy = output_grads[id(module)]
        if which == "bias":
            blocks.append(dy.sum(1))
        else:
            blocks.append(torch.einsum("bto,bti->boi", dy, inputs[id(module)]).reshape(
                len(hidden), -1))
    return blocks
