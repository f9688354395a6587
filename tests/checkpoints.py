"""Tiny random Llama / Mistral / Qwen2 checkpoints made with transformers, for tests.

``save_checkpoint(directory, variant)`` writes a Hugging Face checkpoint directory
(config.json + model.safetensors) of a tiny model; ``VARIANTS`` names the
configurations (GQA, Llama 3 RoPE scaling, tied embeddings, biases, each model type).

Weights are random at a scale that makes every part of the model matter: unit-variance
activations, norms and biases away from their 1 / 0 initialisation, logits of order one.
(transformers' own initialisation, std 0.02, gives near-constant logits that would hide
a wrong rotary or a missing bias from a 1e-4 comparison.) ``HFOracle`` recomputes logits,
hidden states and K/V of a token history with transformers, from scratch; ``Tracker``
drives a ponder model on its paged cache and checks each step against it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

# Shared by every variant: 2 layers, hidden 64, 4 query heads of 16, vocab 128.
BASE: dict[str, Any] = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
    tie_word_embeddings=False,
)

VARIANTS: dict[str, dict[str, Any]] = {
    "llama": dict(model_type="llama"),
    "llama_gqa": dict(model_type="llama", num_key_value_heads=1),
    # Llama 3.1 scaling with a short original context, so that the channel pairs of a
    # 16-dim head fall in all three bands (kept, interpolated, divided by factor).
    "llama3_rope": dict(model_type="llama", num_key_value_heads=2,
                        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_max_position_embeddings=64)),
    "llama_tied": dict(model_type="llama", tie_word_embeddings=True),
    "llama_bias": dict(model_type="llama", attention_bias=True, mlp_bias=True),
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=4096),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2, rope_theta=1000000.0),
}


def hf_config(variant: str, **overrides):
    """The transformers config of ``variant`` (``VARIANTS``), with ``overrides`` applied."""
    from transformers import AutoConfig

    settings = {**BASE, **VARIANTS[variant], **overrides}
    model_type = settings.pop("model_type")
    if "rope_parameters" in settings:
        settings.pop("rope_theta")
    return AutoConfig.for_model(model_type, **settings)


def _auto_class(kind: str):
    import transformers

    classes = {"causal-lm": "AutoModelForCausalLM", "token-classification": "AutoModelForTokenClassification",
               "sequence-classification": "AutoModelForSequenceClassification"}
    return getattr(transformers, classes[kind])


def make_hf_model(variant: str, seed: int = 0, kind: str = "causal-lm", **overrides):
    """A transformers model of ``variant`` in float32, eval mode, with well-scaled random weights.

    ``kind``: ``causal-lm``, or ``token-classification`` / ``sequence-classification``
    (a ``score`` head on the decoder instead of the LM head; give ``num_labels``).
    """
    config = hf_config(variant, **overrides)
    torch.manual_seed(seed)
    model = _auto_class(kind).from_config(config, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=gen))
            elif name.endswith("bias"):
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
            elif "embed_tokens" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
            else:  # a [out, in] projection: unit-variance outputs
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param.shape[1]))
    return model


def save_checkpoint(directory: str | Path, variant: str, seed: int = 0, max_shard_size: str | None = None,
                    kind: str = "causal-lm", **overrides) -> Path:
    """Write a tiny random checkpoint of ``variant`` to ``directory`` (created); returns the directory.

    ``max_shard_size`` (e.g. ``"40KB"``) splits the weights into shards with an index file;
    ``kind`` as for :func:`make_hf_model`.
    """
    directory = Path(directory)
    model = make_hf_model(variant, seed, kind, **overrides)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(directory, **kwargs)
    return directory


def load_hf_model(directory: str | Path, kind: str = "causal-lm"):
    """transformers' own model of a checkpoint directory, float32, eval mode."""
    return _auto_class(kind).from_pretrained(directory, dtype=torch.float32).eval()


class HFOracle:
    """transformers' full-sequence forward of a token history, from scratch (memoised per history)."""

    def __init__(self, hf_model):
        self.hf = hf_model
        self._memo: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._kv_memo: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _run(self, tokens: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(int(t) for t in tokens)
        if key not in self._memo:
            with torch.no_grad():
                hidden = self.hf.model(torch.tensor([key])).last_hidden_state[0]  # after the final norm
                self._memo[key] = hidden, self.hf.lm_head(hidden).float()
        return self._memo[key]

    def logits(self, tokens: Sequence[int]) -> torch.Tensor:
        """float32 [len(tokens), vocab]: the logits after each prefix of ``tokens``."""
        return self._run(tokens)[1]

    def hidden(self, tokens: Sequence[int]) -> torch.Tensor:
        """[len(tokens), hidden_size]: final hidden states (after the last norm) at each position."""
        return self._run(tokens)[0]

    def kv(self, tokens: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (K, V), each [len(tokens), num_kv_heads, head_dim], K after RoPE (as a KV cache holds them)."""
        key = tuple(int(t) for t in tokens)
        if key not in self._kv_memo:
            with torch.no_grad():
                cache = self.hf(torch.tensor([key]), use_cache=True).past_key_values
            self._kv_memo[key] = [(layer.keys[0].transpose(0, 1), layer.values[0].transpose(0, 1))
                                  for layer in cache.layers]
        return self._kv_memo[key]


class Tracker:
    """Drives a ponder model on a cache and checks every step against transformers from scratch.

    Keeps each live sequence's full token history; after each step the logits of every
    stepped sequence must equal transformers' logits of that history (within 1e-4).
    """

    def __init__(self, model, hf_model, *, block_size: int = 4, num_blocks: int = 64):
        self.model = model
        self.oracle = HFOracle(hf_model)
        self.cache = model.new_cache(num_blocks=num_blocks, block_size=block_size)
        self.history: dict[int, list[int]] = {}

    def start(self, prompts):
        seqs, out = self.model.start(self.cache, prompts)
        for seq, prompt in zip(seqs, prompts):
            self.history[seq] = list(prompt)
        self.check_last(seqs, out.logits)
        return seqs

    def step(self, seqs, new_tokens, **rows):
        """model.step; with no rows given, checks the last-token logits of every sequence."""
        out = self.model.step(self.cache, seqs, new_tokens, **rows)
        for seq, new in zip(seqs, new_tokens):
            self.history[seq] = self.history[seq] + list(new)
        if not rows:
            self.check_last(seqs, out.logits)
        self.cache.check_invariants()
        return out

    def fork(self, seq, n):
        children = self.cache.fork(seq, n)
        for child in children:
            self.history[child] = list(self.history[seq])
        return children

    def free(self, seq):
        self.cache.free(seq)
        del self.history[seq]

    def check_last(self, seqs, logits):
        want = torch.stack([self.oracle.logits(self.history[s])[-1] for s in seqs])
        torch.testing.assert_close(logits, want, atol=1e-4, rtol=0)

    def cached_kv(self, seq) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (K, V) [len, num_kv_heads, head_dim] of ``seq``, read through its block table."""
        table = torch.tensor(self.cache.block_table(seq), dtype=torch.int64)
        positions = torch.arange(len(self.cache.tokens(seq)))
        blocks, offsets = table[positions // self.cache.block_size], positions % self.cache.block_size
        return [(self.cache.k[layer, blocks, offsets], self.cache.v[layer, blocks, offsets])
                for layer in range(self.cache.k.shape[0])]

    def check_kv(self, seq):
        """The cached K/V of ``seq`` equal transformers' K/V of its history, every layer."""
        assert self.cache.tokens(seq) == self.history[seq]
        for (k, v), (want_k, want_v) in zip(self.cached_kv(seq), self.oracle.kv(self.history[seq])):
            torch.testing.assert_close(k, want_k, atol=1e-4, rtol=0)
            torch.testing.assert_close(v, want_v, atol=1e-4, rtol=0)
