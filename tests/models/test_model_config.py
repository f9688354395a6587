"""ModelConfig parsing (transformers 4 and 5 config.json formats) and RoPE frequencies against transformers."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from checkpoints import VARIANTS, hf_config
from ponder.models import Llama3RopeScaling, ModelConfig
from ponder.models.rope import RotaryEmbedding, inverse_frequencies


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parse_what_transformers_writes(variant):
    hf = hf_config(variant)
    config = ModelConfig.from_dict(hf.to_dict())
    assert (config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim) == (
        hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim)
    assert config.rope_theta == hf.rope_parameters["rope_theta"]
    assert config.tie_word_embeddings == hf.tie_word_embeddings
    assert (config.rope_scaling is not None) == (variant == "llama3_rope")
    # Round trip through ponder's own config.json.
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("variant", ["llama", "llama3_rope", "qwen2"])
def test_inverse_frequencies_match_transformers(variant):
    hf = hf_config(variant)
    config = ModelConfig.from_dict(hf.to_dict())
    rope_type = hf.rope_parameters["rope_type"]
    if rope_type == "default":
        want = 1.0 / (hf.rope_parameters["rope_theta"] ** (torch.arange(0, 16, 2, dtype=torch.float) / 16))
    else:
        want, _ = ROPE_INIT_FUNCTIONS[rope_type](hf)
    got = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    assert torch.equal(got, want)


def test_llama3_scaling_touches_all_three_bands():
    plain = inverse_frequencies(16, 10000.0)
    scaled = inverse_frequencies(16, 10000.0, Llama3RopeScaling(8.0, 1.0, 4.0, 64))
    assert scaled[0] == plain[0]  # short wavelength: kept
    assert torch.allclose(scaled[-1], plain[-1] / 8)  # long wavelength: divided by factor
    assert ((scaled[1:3] < plain[1:3]) & (scaled[1:3] > plain[1:3] / 8)).all()  # in between: interpolated


def test_transformers4_format():
    raw = dict(model_type="llama", vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=4, rope_theta=500000.0, max_position_embeddings=131072,
               rope_scaling=dict(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0),
               bos_token_id=1, torch_dtype="bfloat16")
    config = ModelConfig.from_dict(raw)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 131072)  # defaults to max_position_embeddings
    assert (config.num_kv_heads, config.head_dim, config.qkv_bias, config.o_bias) == (4, 8, False, False)
    assert config.extra == {"bos_token_id": 1}
    assert config.to_dict()["bos_token_id"] == 1


def test_biases_and_windows_per_model_type():
    base = dict(vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)
    qwen = ModelConfig.from_dict(dict(base, model_type="qwen2"))
    assert (qwen.qkv_bias, qwen.o_bias, qwen.mlp_bias, qwen.sliding_window) == (True, False, False, None)
    windowed = dict(base, model_type="qwen2", use_sliding_window=True, sliding_window=64)
    assert ModelConfig.from_dict(dict(windowed, max_window_layers=2)).sliding_window == 64
    assert ModelConfig.from_dict(dict(windowed, max_window_layers=4)).sliding_window is None  # no layer slides
    assert ModelConfig.from_dict(dict(base, model_type="mistral")).sliding_window == 4096
    assert ModelConfig.from_dict(dict(base, model_type="mistral", sliding_window=None)).sliding_window is None
    llama = ModelConfig.from_dict(dict(base, model_type="llama", attention_bias=True))
    assert (llama.qkv_bias, llama.o_bias) == (True, True)
    with pytest.raises(ValueError, match="qwen2 has o_bias=False"):
        ModelConfig(model_type="qwen2", vocab_size=10, hidden_size=32, intermediate_size=64, num_layers=1,
                    num_heads=4, o_bias=True)
    with pytest.raises(ValueError, match="head_dim must be even"):
        ModelConfig(model_type="llama", vocab_size=10, hidden_size=36, intermediate_size=64, num_layers=1,
                    num_heads=4)


def test_rope_tables_grow_and_match_position_by_position():
    rope = RotaryEmbedding(16, 10000.0)
    rope.ensure(5)
    assert rope.length == 5
    rope.ensure(7)  # grows at least twofold
    assert rope.length == 10
    cos, sin = rope(torch.tensor([9, 0]))
    angles = torch.tensor([9.0, 0.0])[:, None] * inverse_frequencies(16, 10000.0)
    assert torch.equal(cos, angles.cos()) and torch.equal(sin, angles.sin())
