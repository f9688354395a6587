"""The Llama-family decoder (llama, mistral, qwen2) on ponder's paged KV cache.

One :class:`CausalLM` serves two forward passes over the same weights:

* :meth:`CausalLM.step`: the search engine's pass. New tokens of many sequences are
  packed back to back into one batch of ``T`` rows; every matmul runs over all ``T``
  rows at once, and attention reads each sequence's past through its block table::

      plan = cache.step(...)             # slots, copy-on-write pairs, block tables
      copy_blocks(plan.copy_src -> plan.copy_dst)
      x = embed(tokens)                                          # [T, hidden]
      for each layer:
          q, k, v = rope(qkv_proj(rms_norm(x)), plan.positions)  # one fused matmul
          write_kv(k, v -> plan.slot_mapping)
          x = x + o_proj(paged_attention(q, block tables))
          x = x + down(silu(gate) * up)(rms_norm(x))             # one fused gate/up matmul
      logits = lm_head(rms_norm(x[rows]))

  On CPU in float32 the matmuls are :func:`ponder.ops.linear`: faster than the BLAS at
  a decoding step's few rows, and batch-invariant.

* :meth:`CausalLM.forward_dense`: plain causal attention over ``[B, L]`` token batches,
  differentiable, for training.

The q/k/v projections are stored as one ``[q_size + 2 * kv_size, hidden]`` matrix and
gate/up as one ``[2 * intermediate, hidden]`` matrix; :meth:`CausalLM.hf_state_dict`
exposes them under the Hugging Face names (as views) for loading and saving.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ponder import ops
from ponder.kv import KVCache
from ponder.models.config import ModelConfig
from ponder.models.rope import RotaryEmbedding, apply_rotary
from ponder.ops._backend import BACKENDS, resolve_backend, values_checkable

__all__ = ["CausalLM", "StepOutput", "RMSNorm", "DecoderLayer"]

# A dense layer ``linear(x, weight, bias) = x @ weight.T + bias``: F.linear, or
# ponder.ops.linear (the batch-invariant CPU kernel) in the paged forward.
Linear = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class StepOutput:
    """What :meth:`CausalLM.step` returns.

    Attributes
    ----------
    logits : float32 [R, vocab_size], or None
        Logits at the requested rows of the packed new tokens (``logit_rows``); None for
        a model without an LM head (a reward model with a head of its own).
    hidden : [R2, hidden_size] in the model dtype, or None
        Final hidden states (after the last RMSNorm) at ``hidden_rows``; None when none
        were asked for.

    num_tokens : int
        Tokens the forward ran over (T, the packed new tokens), for budget accounting.

    Both are inference tensors (made under ``torch.inference_mode``): ``.clone()`` one
    outside inference mode to use it in autograd.
    """

    logits: torch.Tensor | None
    hidden: torch.Tensor | None
    num_tokens: int


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x**2) + eps)``, the statistics in float32 (as transformers computes it)."""

    def __init__(self, size: int, eps: float, *, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., size] -> [..., size] in x's dtype."""
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class DecoderLayer(nn.Module):
    """Attention projections and SiLU-gated MLP of one layer (attention itself is the caller's)."""

    def __init__(self, config: ModelConfig, *, device=None, dtype=None):
        super().__init__()
        c = self.config = config
        factory = dict(device=device, dtype=dtype)
        self.input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **factory)
        self.qkv = nn.Linear(c.hidden_size, c.q_size + 2 * c.kv_size, bias=c.qkv_bias, **factory)
        self.o_proj = nn.Linear(c.q_size, c.hidden_size, bias=c.o_bias, **factory)
        self.post_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **factory)
        self.gate_up = nn.Linear(c.hidden_size, 2 * c.intermediate_size, bias=c.mlp_bias, **factory)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias, **factory)

    def attention_inputs(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         linear: Linear = F.linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys (rotated) and values of the layer's input ``x`` (before its norm).

        Parameters
        ----------
        x : [..., hidden_size]
        cos, sin : [..., head_dim // 2], the RoPE tables at each row's position
        linear : the dense layer to project with

        Returns
        -------
        q : [..., num_heads, head_dim]; k, v : [..., num_kv_heads, head_dim] (strided views)
        """
        c = self.config
        qkv = linear(self.input_norm(x), self.qkv.weight, self.qkv.bias)
        qk = apply_rotary(qkv[..., :c.q_size + c.kv_size].unflatten(-1, (c.num_heads + c.num_kv_heads, c.head_dim)),
                          cos, sin)
        v = qkv[..., c.q_size + c.kv_size:].unflatten(-1, (c.num_kv_heads, c.head_dim))
        return qk[..., :c.num_heads, :], qk[..., c.num_heads:, :], v

    def mlp(self, x: torch.Tensor, linear: Linear = F.linear) -> torch.Tensor:
        """The residual branch after attention: ``down(silu(gate(n)) * up(n))``, ``n = post_norm(x)``."""
        gate, up = linear(self.post_norm(x), self.gate_up.weight, self.gate_up.bias).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, self.down.weight, self.down.bias)


class CausalLM(nn.Module):
    """A Llama-family causal language model whose :meth:`step` runs on a :class:`~ponder.kv.KVCache`.

    Built from a config it is randomly initialised (normal with std
    ``config.initializer_range``, norms at one, biases at zero), for training from
    scratch; :func:`ponder.load_model` fills it from a checkpoint.

    Parameters
    ----------
    config : ModelConfig
    device, dtype : where the weights (and the caches of :meth:`new_cache`) live and their
        float dtype (float32, float16 or bfloat16)
    backend : {"reference", "cpu", "cuda", "triton"}, optional
        KV ops backend; default the best for the device (see :mod:`ponder.ops`).
    lm_head : bool
        False builds the decoder without its output projection (untied models only), as
        reward models with a classification head are stored; :meth:`step` then returns
        hidden states only.
    """

    def __init__(self, config: ModelConfig, *, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, backend: str | None = None, lm_head: bool = True):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ponder.models.ModelConfig, got {type(config).__name__}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        self.config = config
        self.backend = backend
        self.scale = config.head_dim ** -0.5
        factory = dict(device=device, dtype=dtype)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, **factory)
        self.layers = nn.ModuleList(DecoderLayer(config, **factory) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)
        self.has_lm_head = lm_head or config.tie_word_embeddings
        self.lm_head = None if config.tie_word_embeddings or not lm_head else \
            nn.Linear(config.hidden_size, config.vocab_size, bias=False, **factory)
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling, **factory)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random initialisation as transformers does it: weights ~ N(0, initializer_range), norms 1, biases 0."""
        std = self.config.initializer_range
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, 0.0, std, generator=generator)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
                if isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)

    # -- properties --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def output_weight(self) -> torch.Tensor:
        """The output projection [vocab_size, hidden_size]: ``lm_head.weight``, or the embeddings when tied."""
        if not self.has_lm_head:
            raise ValueError("this model was built without an LM head (lm_head=False): it gives hidden states only")
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight under its Hugging Face name (``model.layers.0.self_attn.q_proj.weight``, ...).

        The fused q/k/v and gate/up matrices appear as their row slices: the values are
        views of the parameters, so copying into them loads the model. A tied model has
        no ``lm_head.weight``.
        """
        c = self.config
        q, kv, inter = c.q_size, c.kv_size, c.intermediate_size
        out = {"model.embed_tokens.weight": self.embed.weight}
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = layer.input_norm.weight
            parts = {"weight": layer.qkv.weight, **({"bias": layer.qkv.bias} if c.qkv_bias else {})}
            for kind, fused in parts.items():
                out[p + f"self_attn.q_proj.{kind}"] = fused[:q]
                out[p + f"self_attn.k_proj.{kind}"] = fused[q:q + kv]
                out[p + f"self_attn.v_proj.{kind}"] = fused[q + kv:]
            out[p + "self_attn.o_proj.weight"] = layer.o_proj.weight
            if c.o_bias:
                out[p + "self_attn.o_proj.bias"] = layer.o_proj.bias
            out[p + "post_attention_layernorm.weight"] = layer.post_norm.weight
            parts = {"weight": layer.gate_up.weight, **({"bias": layer.gate_up.bias} if c.mlp_bias else {})}
            for kind, fused in parts.items():
                out[p + f"mlp.gate_proj.{kind}"] = fused[:inter]
                out[p + f"mlp.up_proj.{kind}"] = fused[inter:]
            out[p + "mlp.down_proj.weight"] = layer.down.weight
            if c.mlp_bias:
                out[p + "mlp.down_proj.bias"] = layer.down.bias
        out["model.norm.weight"] = self.norm.weight
        if self.lm_head is not None:
            out["lm_head.weight"] = self.lm_head.weight
        return out

    # -- the paged forward -----------------------------------------------------------------
    def new_cache(self, max_tokens: int | None = None, *, num_blocks: int | None = None,
                  max_bytes: int | None = None, block_size: int = 16) -> KVCache:
        """A :class:`~ponder.kv.KVCache` shaped for this model (layers, KV heads, head_dim, dtype, device).

        Give exactly one of ``max_tokens``, ``num_blocks`` or ``max_bytes``.
        """
        c = self.config
        return KVCache(num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                       block_size=block_size, num_blocks=num_blocks, max_tokens=max_tokens, max_bytes=max_bytes,
                       dtype=self.dtype, device=self.device)

    def step(self, cache: KVCache, seq_ids: Sequence[int], new_tokens: Sequence[Sequence[int]],
             logit_rows: torch.Tensor | Sequence[int] | None = None,
             hidden_rows: torch.Tensor | Sequence[int] | None = None) -> StepOutput:
        """Append ``new_tokens[i]`` to sequence ``seq_ids[i]`` for every ``i``, in one batched forward.

        The new tokens are packed back to back: sequence ``i`` owns rows
        ``sum(len(new_tokens[:i])) ...`` of the ``T`` packed rows. Their K/V go into the
        cache; each attends to its sequence's whole cached past.

        Parameters
        ----------
        cache : KVCache made by :meth:`new_cache` (or shaped alike)
        seq_ids : S distinct live sequences of ``cache``
        new_tokens : S lists of token ids in ``[0, vocab_size)``, each non-empty
        logit_rows : int64 [R] (or a list), rows of the packed tokens in ``[0, T)`` whose
            logits to return; default the last new token of each sequence (R = S), or none
            for a model without an LM head
        hidden_rows : int64 [R2] (or a list), rows whose final hidden states to return;
            default none

        Returns
        -------
        StepOutput: ``logits`` float32 [R, vocab_size] (None without an LM head), ``hidden``
        [R2, hidden_size] or None.

        Raises
        ------
        ValueError, TypeError
            Bad arguments; nothing changed.
        ponder.kv.OutOfBlocks
            The cache cannot hold the step; nothing changed.
        NotImplementedError
            A sequence would grow past the model's sliding window; the step is rolled back.

        If the forward fails, the step is rolled back (:meth:`KVCache.step`): tables,
        token lists and reference counts are as before.
        """
        self._check_cache(cache)
        seq_ids = list(seq_ids)
        if len(seq_ids) != len(new_tokens):
            raise ValueError(f"{len(seq_ids)} sequences but {len(new_tokens)} token lists: expected one list per "
                             "sequence")
        tokens, lengths = self._pack("new_tokens", new_tokens)
        total = tokens.shape[0]
        if logit_rows is None:
            logit_rows = torch.tensor(list(accumulate(lengths)), dtype=torch.int64) - 1 if self.has_lm_head else []
        logit_rows = self._rows("logit_rows", logit_rows, total)
        if not self.has_lm_head and logit_rows.numel():
            raise ValueError("logit_rows given, but this model has no LM head (lm_head=False): ask for hidden_rows")
        hidden_rows = None if hidden_rows is None else self._rows("hidden_rows", hidden_rows, total)
        self.rope.ensure(cache.pool.num_blocks * cache.block_size)  # no sequence is longer than the cache
        tokens = tokens.to(self.device)
        with torch.inference_mode(), cache.step(seq_ids, new_tokens) as plan:
            if self.config.sliding_window is not None:
                self._check_window(int(plan.seq_lens.max()))
            if plan.copy_src.numel():
                ops.copy_blocks(cache.k, cache.v, plan.copy_src, plan.copy_dst, backend=self.backend)
            linear = self._paged_linear()
            x = self._forward_paged(tokens, cache, plan, linear)
            logits = self._logits(self.norm(x[logit_rows]), linear) if self.has_lm_head else None
            hidden = None if hidden_rows is None else self.norm(x[hidden_rows])
        return StepOutput(logits, hidden, total)

    def start(self, cache: KVCache, prompts: Sequence[Sequence[int]], *,
              hidden: bool = False) -> tuple[list[int], StepOutput]:
        """Start one sequence per prompt and run the prompts through the model in one step.

        Each prompt's prefix already in the cache's prefix cache (whole blocks) is
        reused, and only the remainder is computed. A prompt given more than once (the
        chains of one question in revisions, or that question for the verifier of each
        chain) is computed once: its later sequences are forks of its first one.

        Returns
        -------
        (seq_ids, out): the new sequences, and ``out.logits`` float32 [len(prompts), vocab_size],
        the logits after each prompt's last token (None without an LM head); with
        ``hidden=True`` also ``out.hidden`` [len(prompts), hidden_size], the final hidden
        states there. ``out.num_tokens`` counts each distinct prompt's tokens once.

        On failure the new sequences are freed again and the error re-raised.
        """
        self._pack("prompts", prompts)  # validate before touching the cache
        prompts = [tuple(int(t) for t in p) for p in prompts]  # plain ints: the prefix cache hashes them
        row_of: dict[tuple[int, ...], int] = {}
        rows = [row_of.setdefault(prompt, len(row_of)) for prompt in prompts]  # a prompt's distinct-prompt row
        distinct = list(row_of)
        cache.check_prompts_fit(distinct)  # OutOfBlocks before any cached block is taken; forks take none
        computed: list[int] = []
        forks: list[int] = []
        try:
            remainders = []
            for prompt in distinct:
                seq_id, cached = cache.add_sequence(prompt)
                computed.append(seq_id)
                remainders.append(list(prompt[cached:]))
            last_rows = torch.tensor(list(accumulate(len(r) for r in remainders)), dtype=torch.int64) - 1
            out = self.step(cache, computed, remainders, logit_rows=last_rows if self.has_lm_head else None,
                            hidden_rows=last_rows if hidden else None)
            seq_ids, taken = [], set()
            for row in rows:
                if row in taken:
                    forks.append(cache.fork(computed[row], 1)[0])
                    seq_ids.append(forks[-1])
                else:
                    taken.add(row)
                    seq_ids.append(computed[row])
        except BaseException:
            for seq_id in computed + forks:
                cache.free(seq_id)
            raise
        if len(distinct) < len(prompts):
            index = torch.tensor(rows)
            out = StepOutput(None if out.logits is None else out.logits[index],
                             None if out.hidden is None else out.hidden[index], out.num_tokens)
        return seq_ids, out

    def _forward_paged(self, tokens: torch.Tensor, cache: KVCache, plan, linear: Linear) -> torch.Tensor:
        """Hidden states before the final norm of the packed ``tokens`` (int64 [T]): [T, hidden_size].

        ``linear`` is the dense layer to project with (:meth:`_paged_linear`).
        """
        c = self.config
        x = self.embed(tokens)
        cos, sin = self.rope(plan.positions)
        attn = torch.empty(tokens.shape[0], c.num_heads, c.head_dim, dtype=x.dtype, device=x.device)
        flat_attn = attn.view(tokens.shape[0], c.q_size)
        # Every layer passes the same caches, indices and shapes: the public ops check
        # them at layer 0, and later layers call the compiled kernels as the public ops
        # would after their checks, saving ~0.1 ms of Python a layer.
        compiled = resolve_backend(self.backend, self.device) in ("cpu", "cuda")
        for i, layer in enumerate(self.layers):
            q, k, v = layer.attention_inputs(x, cos, sin, linear)
            if i == 0 or not compiled:
                ops.write_kv(cache.k, cache.v, i, k, v, plan.slot_mapping, check_indices=i == 0, backend=self.backend)
                ops.paged_attention(q, cache.k, cache.v, i, plan.block_tables, plan.seq_lens, plan.query_lens,
                                    scale=self.scale, out=attn, check_indices=i == 0, backend=self.backend)
            else:
                torch.ops.ponder.write_kv(cache.k, cache.v, i, k, v, plan.slot_mapping)
                torch.ops.ponder.paged_attention(q, cache.k, cache.v, i, plan.block_tables, plan.seq_lens,
                                                 plan.query_lens, self.scale, attn)
            x = x + linear(flat_attn, layer.o_proj.weight, layer.o_proj.bias)
            x = x + layer.mlp(x, linear)
        return x

    def _paged_linear(self) -> Linear:
        """The dense layer of the paged (inference) forward.

        Float32 on CPU with the extension built (and the cpu or default backend):
        :func:`ponder.ops.linear`, 1.2-4x faster than the BLAS (the most at a decoding
        step's few rows) and batch-invariant, which makes the whole step so: a sequence's
        logits are bitwise the same whatever else is batched with it. Elsewhere F.linear
        (cuBLAS on GPUs).
        """
        if self.dtype == torch.float32 and self.backend in (None, "cpu") \
                and ops.linear_backend(self.backend, self.device) == "cpu":
            # The compiled op itself: the model's own 2-D float32 tensors need none of the
            # public function's checks (the kernel keeps its own), and a step makes 4 calls
            # a layer.
            return torch.ops.ponder.linear
        return F.linear

    def _logits(self, hidden: torch.Tensor, linear: Linear = F.linear) -> torch.Tensor:
        """Final hidden states [..., hidden_size] -> float32 logits [..., vocab_size]."""
        return linear(hidden, self.output_weight, None).float()

    # -- the dense forward -------------------------------------------------------------------
    def dense_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (after the last RMSNorm) of a causal forward over whole sequences.

        Parameters
        ----------
        input_ids : int64 [B, L], token ids in ``[0, vocab_size)``
        attention_mask : [B, L] (bool or 0/1), optional
            False / 0 marks padding, which no token attends to. Positions are
            ``0 .. L-1`` in every row, so pad on the right.

        Returns
        -------
        [B, L, hidden_size] in the model dtype; differentiable. Rows at padding
        positions are meaningless.
        """
        input_ids = self._check_dense_ids(input_ids)
        batch, length = input_ids.shape
        self._check_window(length)
        mask = None
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
                shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else None
                raise ValueError(f"attention_mask must be a tensor of shape {tuple(input_ids.shape)} like input_ids, "
                                 f"got {shape or type(attention_mask).__name__}")
            causal = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()
            keys = attention_mask.to(device=self.device, dtype=torch.bool)[:, None, None, :]
            # Every token also sees itself, so a pad row has a key and gives no NaN.
            mask = causal & (keys | torch.eye(length, dtype=torch.bool, device=self.device))
        c = self.config
        group = c.num_heads // c.num_kv_heads
        self.rope.ensure(length)
        cos, sin = self.rope.cos[:length], self.rope.sin[:length]
        x = self.embed(input_ids)
        for layer in self.layers:
            q, k, v = (t.transpose(1, 2) for t in layer.attention_inputs(x, cos, sin))  # [B, heads, L, head_dim]
            if group > 1:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale)
            x = x + layer.o_proj(out.transpose(1, 2).reshape(batch, length, c.q_size))
            x = x + layer.mlp(x)
        return self.norm(x)

    def forward_dense(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of a plain causal forward: float32 [B, L, vocab_size] for input_ids int64 [B, L].

        Differentiable (for training); see :meth:`dense_hidden` for the arguments.
        """
        return self._logits(self.dense_hidden(input_ids, attention_mask))

    forward = forward_dense

    # -- checks -----------------------------------------------------------------------------
    def _check_cache(self, cache: KVCache) -> None:
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a ponder.kv.KVCache, got {type(cache).__name__}")
        c = self.config
        shape = cache.k.shape
        if (shape[0], shape[3], shape[4]) != (c.num_layers, c.num_kv_heads, c.head_dim) or \
                cache.k.dtype != self.dtype or cache.k.device != self.device:
            raise ValueError(
                f"the cache holds K/V of shape {tuple(shape)} ({cache.k.dtype} on {cache.k.device}) but this model "
                f"needs [num_layers={c.num_layers}, num_blocks, block_size, num_kv_heads={c.num_kv_heads}, "
                f"head_dim={c.head_dim}] ({self.dtype} on {self.device}): make it with model.new_cache(...)")

    def _pack(self, name: str, token_lists: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[int]]:
        """Token lists packed back to back: (int64 [T] on the CPU, per-list lengths), every id checked."""
        if len(token_lists) == 0:
            raise ValueError(f"{name} is empty: expected at least one sequence")
        lengths = [len(tokens) for tokens in token_lists]
        if 0 in lengths:
            i = lengths.index(0)
            raise ValueError(f"{name}[{i}] is empty: every sequence needs at least one token")
        flat = torch.as_tensor([t for tokens in token_lists for t in tokens])
        if flat.dtype in (torch.bool, torch.uint8) or flat.is_floating_point() or flat.is_complex():
            raise TypeError(f"{name} must hold integer token ids, got {flat.dtype} values")
        bad = (flat < 0) | (flat >= self.config.vocab_size)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            offsets = [0, *accumulate(lengths)]
            seq = bisect_right(offsets, index) - 1
            raise ValueError(f"{name}[{seq}][{index - offsets[seq]}] = {int(flat[index])} is out of range: expected "
                             f"a token id in [0, {self.config.vocab_size}) (vocab_size)")
        return flat.to(torch.int64), lengths

    def _rows(self, name: str, rows, total: int) -> torch.Tensor:
        """``rows`` as an int64 [R] tensor on the model's device, each in ``[0, total)``."""
        rows = torch.as_tensor(rows, dtype=None if len(rows) else torch.int64)  # [] would be float32
        if rows.dtype in (torch.bool, torch.uint8) or rows.is_floating_point() or rows.is_complex() or rows.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor of int64 row indices, got {rows.dtype} of shape "
                             f"{tuple(rows.shape)}")
        if values_checkable(rows) and rows.numel():
            low, high = int(rows.min()), int(rows.max())
            if low < 0 or high >= total:
                raise ValueError(f"{name} holds {low if low < 0 else high}, out of range: expected rows in "
                                 f"[0, {total}) (the step packs {total} new tokens)")
        return rows.to(device=self.device, dtype=torch.int64)

    def _check_dense_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
            got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an int64 tensor of shape [batch, length >= 1], got {got}")
        if input_ids.dtype in (torch.bool, torch.uint8) or input_ids.is_floating_point() or input_ids.is_complex():
            raise TypeError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
        if values_checkable(input_ids) and input_ids.numel():
            bad = (input_ids < 0) | (input_ids >= self.config.vocab_size)
            if bool(bad.any()):
                where = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(f"input_ids[{where[0]}, {where[1]}] = {int(input_ids[where])} is out of range: "
                                 f"expected a token id in [0, {self.config.vocab_size}) (vocab_size)")
        return input_ids.to(device=self.device, dtype=torch.int64)

    def _check_window(self, longest: int) -> None:
        """Refuse a sequence of ``longest`` tokens if that exceeds the sliding window."""
        window = self.config.sliding_window
        if window is not None and longest > window:
            raise NotImplementedError(
                f"a sequence would hold {longest} tokens but this {self.config.model_type} model attends within a "
                f"sliding window of {window}; ponder's paged attention has no window, so sequences must stay "
                f"within {window} tokens")
