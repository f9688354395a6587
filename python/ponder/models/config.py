"""Model configuration of the Llama family (llama, mistral, qwen2), parsed from a Hugging Face config.json.

:class:`ModelConfig` holds what ponder's forward pass needs, under ponder's names
(``num_layers``, ``num_heads``, ``num_kv_heads``, ...), with the defaults of the
transformers config classes for keys a config.json leaves out. :meth:`ModelConfig.to_dict`
writes it back as a config.json that transformers loads into the same model.

What differs between the three model types is only which projections carry a bias:

============  ===========  ============  ==========
model_type    q/k/v bias   o_proj bias   MLP bias
============  ===========  ============  ==========
llama         attention_bias (both)      mlp_bias
mistral       no           no            no
qwen2         yes          no            no
============  ===========  ============  ==========

and the sliding window (mistral: ``sliding_window`` on every layer; qwen2: only with
``use_sliding_window``, on the layers ``layer_types`` marks ``"sliding_attention"``).
ponder's paged attention has no window: a model with one runs as long as no sequence
exceeds it (below the window, windowed attention is plain causal attention).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ModelConfig", "Llama3RopeScaling", "SUPPORTED_MODEL_TYPES", "SUPPORTED_ROPE_TYPES",
           "SUPPORTED_ACTIVATIONS"]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "llama3")
SUPPORTED_ACTIVATIONS = ("silu", "swish")  # transformers maps both to SiLU

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# transformers' defaults for keys a config.json may leave out, per model type.
_MAX_POSITIONS = {"llama": 2048, "mistral": 131072, "qwen2": 32768}
_DEFAULT_THETA = 10000.0
_MISTRAL_WINDOW = 4096
_QWEN2_WINDOW = 4096
_QWEN2_MAX_WINDOW_LAYERS = 28
# config.json keys that from_dict interprets (everything else is kept verbatim in ``extra``).
_CONSUMED = {
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "partial_rotary_factor", "max_position_embeddings", "original_max_position_embeddings", "attention_bias",
    "mlp_bias", "tie_word_embeddings", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
    "hidden_act", "initializer_range", "architectures", "transformers_version", "torch_dtype", "dtype",
}


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1 RoPE frequency scaling (rope_type ``"llama3"``), as in transformers.

    Wavelengths longer than ``original_max_position_embeddings / low_freq_factor`` are
    stretched by ``factor``, those shorter than ``original_max_position_embeddings /
    high_freq_factor`` are kept, and those in between are interpolated smoothly.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self):
        if not self.factor > 0:
            raise ValueError(f"llama3 rope scaling needs factor > 0, got {self.factor}")
        if not self.high_freq_factor > self.low_freq_factor:
            raise ValueError(f"llama3 rope scaling needs high_freq_factor > low_freq_factor, got "
                             f"{self.high_freq_factor} and {self.low_freq_factor}")
        if not self.original_max_position_embeddings > 0:
            raise ValueError(f"llama3 rope scaling needs original_max_position_embeddings > 0, got "
                             f"{self.original_max_position_embeddings}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of one Llama-family decoder.

    Parameters left as None take the model type's transformers default: ``num_kv_heads``
    = ``num_heads``; ``head_dim`` = ``hidden_size // num_heads``; the biases per the table
    in :mod:`ponder.models.config`; ``max_position_embeddings`` 2048 (llama), 131072
    (mistral), 32768 (qwen2).

    Attributes
    ----------
    model_type : "llama", "mistral" or "qwen2"
    vocab_size, hidden_size, intermediate_size : int
    num_layers, num_heads, num_kv_heads, head_dim : int
        ``num_heads`` a multiple of ``num_kv_heads`` (grouped-query attention), ``head_dim`` even
    rms_norm_eps : float
    rope_theta : float
        RoPE base.
    rope_scaling : Llama3RopeScaling or None
        None: plain RoPE.
    max_position_embeddings : int
        Written back to config.json; ponder computes RoPE at any position.
    qkv_bias, o_bias, mlp_bias : bool
        Whether q/k/v_proj, o_proj and gate/up/down_proj carry biases.
    tie_word_embeddings : bool
        The output projection is the embedding matrix.
    sliding_window : int or None
        Sequences longer than this are refused (NotImplementedError).
    initializer_range : float
        Standard deviation of the random initialisation of a model built from scratch.
    extra : dict
        The config.json keys ponder does not interpret (token ids, ...), kept for
        :meth:`to_dict`. Not part of equality.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = _DEFAULT_THETA
    rope_scaling: Llama3RopeScaling | None = None
    max_position_embeddings: int | None = None
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    initializer_range: float = 0.02
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {self.model_type!r}: ponder runs {list(SUPPORTED_MODEL_TYPES)}")
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            _check_positive_int(name, getattr(self, name))
        if self.num_kv_heads is None:
            set_("num_kv_heads", self.num_heads)
        if self.head_dim is None:
            set_("head_dim", self.hidden_size // self.num_heads)
        if self.max_position_embeddings is None:
            set_("max_position_embeddings", _MAX_POSITIONS[self.model_type])
        for name in ("num_kv_heads", "head_dim", "max_position_embeddings"):
            _check_positive_int(name, getattr(self, name))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads = {self.num_heads} must be a multiple of num_kv_heads = {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs of channels), got {self.head_dim}")
        if self.sliding_window is not None:
            _check_positive_int("sliding_window", self.sliding_window)
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, Llama3RopeScaling):
            raise TypeError(f"rope_scaling must be a Llama3RopeScaling or None, got {type(self.rope_scaling).__name__}")
        self._resolve_biases(set_)
        set_("extra", dict(self.extra))

    def _resolve_biases(self, set_) -> None:
        fixed = {"mistral": (False, False, False), "qwen2": (True, False, False)}.get(self.model_type)
        if fixed is None:  # llama: one attention_bias for q/k/v and o_proj
            qkv = self.qkv_bias if self.qkv_bias is not None else bool(self.o_bias)
            o = self.o_bias if self.o_bias is not None else qkv
            if qkv != o:
                raise ValueError(f"llama has one attention_bias for q/k/v_proj and o_proj, got qkv_bias={qkv} and "
                                 f"o_bias={o}")
            set_("qkv_bias", bool(qkv))
            set_("o_bias", bool(o))
            return
        given = (self.qkv_bias, self.o_bias, self.mlp_bias)
        for name, value, want in zip(("qkv_bias", "o_bias", "mlp_bias"), given, fixed):
            if value is not None and bool(value) != want:
                raise ValueError(f"{self.model_type} has {name}={want} (fixed by the architecture), got {value}")
        set_("qkv_bias", fixed[0])
        set_("o_bias", fixed[1])

    # -- derived sizes ---------------------------------------------------------------
    @property
    def q_size(self) -> int:
        """Width of the query projection: ``num_heads * head_dim``."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key (and of the value) projection: ``num_kv_heads * head_dim``."""
        return self.num_kv_heads * self.head_dim

    # -- config.json -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModelConfig":
        """Parse the contents of a Hugging Face config.json.

        Raises
        ------
        ValueError
            For a model type, activation or RoPE type ponder does not run, naming what is
            supported, or a required key that is missing.
        """
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}: ponder runs {list(SUPPORTED_MODEL_TYPES)} "
                             "(Llama-family decoders)")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [key for key in required if raw.get(key) is None]
        if missing:
            raise ValueError(f"config.json lacks {missing}: a {model_type} config needs {list(required)}")
        activation = raw.get("hidden_act", "silu")
        if activation not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {activation!r}: ponder runs {list(SUPPORTED_ACTIVATIONS)} "
                             "(SiLU-gated MLP)")
        max_positions = raw.get("max_position_embeddings") or _MAX_POSITIONS[model_type]
        theta, scaling = _parse_rope(raw, max_positions)
        attention_bias = raw.get("attention_bias", False) if model_type == "llama" else None
        return cls(
            model_type=model_type,
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            num_kv_heads=raw.get("num_key_value_heads"),
            head_dim=raw.get("head_dim"),
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=max_positions,
            qkv_bias=attention_bias,
            o_bias=attention_bias,
            mlp_bias=bool(raw.get("mlp_bias", False)) if model_type == "llama" else False,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            sliding_window=_parse_sliding_window(raw, model_type),
            initializer_range=raw.get("initializer_range", 0.02),
            extra={k: v for k, v in raw.items() if k not in _CONSUMED},
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read ``path`` (a config.json, or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json at {path}: expected a Hugging Face checkpoint directory")
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """A config.json (as a dict) that transformers and :meth:`from_dict` load into this model."""
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope = {"rope_type": "llama3", "rope_theta": self.rope_theta,
                    **{f.name: getattr(self.rope_scaling, f.name) for f in fields(self.rope_scaling)}}
        out = dict(self.extra)
        out.update(
            architectures=[_ARCHITECTURES[self.model_type]],
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range,
            tie_word_embeddings=self.tie_word_embeddings,
            rope_theta=self.rope_theta,  # read by transformers 4.x; 5.x reads rope_parameters
            rope_parameters=rope,
        )
        if self.rope_scaling is not None:
            out["rope_scaling"] = dict(rope)  # transformers 4.x
        if self.model_type == "llama":
            out.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        elif self.model_type == "mistral":
            out.update(sliding_window=self.sliding_window)
        else:  # qwen2: a window applies to the layers from max_window_layers on; here to all of them
            out.update(use_sliding_window=self.sliding_window is not None, sliding_window=self.sliding_window,
                       max_window_layers=0 if self.sliding_window is not None else self.num_layers,
                       layer_types=["sliding_attention" if self.sliding_window is not None else "full_attention"]
                       * self.num_layers)
        return out


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _parse_rope(raw: Mapping[str, Any], max_positions: int) -> tuple[float, Llama3RopeScaling | None]:
    """(rope_theta, scaling) the way transformers 5 reads them.

    ``rope_scaling`` (transformers 4) takes precedence over ``rope_parameters``
    (transformers 5); ``rope_theta`` comes from that dict, else the top level, else 10000.
    """
    params = raw.get("rope_scaling") or raw.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"rope_parameters must be a dict, got {params!r}")
    if any(isinstance(value, Mapping) for value in params.values()):
        raise ValueError("per-layer-type rope_parameters are not supported: ponder runs one RoPE for all layers")
    theta = params.get("rope_theta", raw.get("rope_theta", _DEFAULT_THETA))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope_type {rope_type!r}: ponder runs {list(SUPPORTED_ROPE_TYPES)}")
    partial = params.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
    if partial is not None and partial != 1.0:
        raise ValueError(f"unsupported partial_rotary_factor {partial}: ponder rotates every channel (1.0)")
    if rope_type == "default":
        return float(theta), None
    missing = [key for key in ("factor", "low_freq_factor", "high_freq_factor") if params.get(key) is None]
    if missing:
        raise ValueError(f"llama3 rope scaling lacks {missing}: it needs factor, low_freq_factor, high_freq_factor "
                         "and original_max_position_embeddings")
    # transformers lets a top-level original_max_position_embeddings win over the rope dict's.
    original = raw.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") \
        or max_positions
    return float(theta), Llama3RopeScaling(float(params["factor"]), float(params["low_freq_factor"]),
                                           float(params["high_freq_factor"]), int(original))


def _parse_sliding_window(raw: Mapping[str, Any], model_type: str) -> int | None:
    """The window that applies to at least one layer, or None (as transformers builds the masks)."""
    if model_type == "llama":
        return None
    if model_type == "mistral":
        return raw.get("sliding_window", _MISTRAL_WINDOW)
    if not raw.get("use_sliding_window", False):
        return None
    window = raw.get("sliding_window", _QWEN2_WINDOW)
    if window is None:
        return None
    layer_types = raw.get("layer_types")
    if layer_types is None:
        sliding = raw["num_hidden_layers"] > raw.get("max_window_layers", _QWEN2_MAX_WINDOW_LAYERS)
    else:
        sliding = "sliding_attention" in layer_types
    return window if sliding else None
