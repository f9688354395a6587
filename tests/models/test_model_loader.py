"""load_model / save_pretrained / forward_dense against transformers, and clear errors on bad checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import ponder
from checkpoints import VARIANTS, load_hf_model, save_checkpoint
from ponder.models import CausalLM, ModelConfig, load_model, save_pretrained


def batch(b: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 128, (b, length), generator=torch.Generator().manual_seed(seed))


def hf_logits(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids).logits.float()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_dense_matches_transformers(models, variant):
    model, hf = models(variant)
    ids = batch(2, 21, 0)
    torch.testing.assert_close(model.forward_dense(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)


def test_forward_dense_right_padding_and_gradients(models):
    model, hf = models("qwen2")
    ids = batch(2, 12, 1)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False  # row 1 is 7 real tokens, then padding
    logits = model.forward_dense(ids, attention_mask=mask.long())
    torch.testing.assert_close(logits[1, :7], hf_logits(hf, ids[1:, :7])[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits[0], hf_logits(hf, ids[:1])[0], atol=1e-4, rtol=0)
    assert torch.isfinite(logits).all()
    model.zero_grad()
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 128), ids[:, 1:].reshape(-1)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path, models):
    directory = save_checkpoint(tmp_path, "llama", max_shard_size="40KB")
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(list(directory.glob("*.safetensors"))) > 1
    sharded, (single, _) = load_model(directory), models("llama")
    for (name, a), (_, b) in zip(sharded.hf_state_dict().items(), single.hf_state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("variant", ["llama3_rope", "llama_tied", "llama_bias", "mistral", "qwen2"])
def test_save_pretrained_round_trip(tmp_path, models, variant):
    model, hf = models(variant)
    directory = save_pretrained(model, tmp_path / "saved")
    reloaded, hf_reloaded = load_model(directory), load_hf_model(directory)
    assert reloaded.config == model.config
    assert type(hf_reloaded) is type(hf)
    ids = batch(2, 17, 2)
    want = hf_logits(hf, ids)
    torch.testing.assert_close(hf_logits(hf_reloaded, ids), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(reloaded.forward_dense(ids), want, atol=1e-4, rtol=0)


def test_a_model_trained_from_scratch_ships_to_transformers(tmp_path):
    config = ModelConfig(model_type="llama", vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=1,
                         num_heads=4, num_kv_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = CausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 50, (4, 10))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(ids)[:, :-1].reshape(-1, 50), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = save_pretrained(model, tmp_path)
    assert json.loads((directory / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    with torch.no_grad():
        want = model.forward_dense(ids)
    torch.testing.assert_close(hf_logits(load_hf_model(directory), ids), want, atol=1e-4, rtol=0)
    cache = model.new_cache(max_tokens=64, block_size=4)
    _, out = model.start(cache, ids[:2].tolist())
    torch.testing.assert_close(out.logits, want[:2, -1], atol=1e-4, rtol=0)


# -- bad checkpoints and bad input ----------------------------------------------------------------
def edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def edit_weights(directory, edit):
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.fixture
def copy_of(checkpoint, tmp_path):
    def make(variant):
        return shutil.copytree(checkpoint(variant), tmp_path / variant)
    return make


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="gpt2"), r"unsupported model_type 'gpt2': ponder runs \['llama', 'mistral', 'qwen2'\]"),
    (dict(hidden_act="gelu"), r"unsupported hidden_act 'gelu'"),
    (dict(rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=2.0)), r"unsupported rope_type 'yarn'"),
    (dict(rope_parameters=dict(rope_type="llama3", rope_theta=1e4)), r"llama3 rope scaling lacks \['factor'"),
    (dict(partial_rotary_factor=0.5), r"unsupported partial_rotary_factor 0.5"),
    (dict(num_key_value_heads=3), r"num_heads = 4 must be a multiple of num_kv_heads = 3"),
    (dict(vocab_size=None), r"config.json lacks \['vocab_size'\]"),
])
def test_unsupported_config(copy_of, changes, message):
    directory = copy_of("llama")
    edit_config(directory, **changes)
    with pytest.raises(ValueError, match=message):
        load_model(directory)


def test_missing_weight(copy_of):
    directory = copy_of("llama")
    edit_weights(directory, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(ValueError, match=r"lacks the weight model\.layers\.1\.self_attn\.k_proj\.weight"):
        load_model(directory)


def test_untied_checkpoint_without_lm_head(copy_of):
    directory = copy_of("llama")
    edit_weights(directory, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(ValueError, match=r"lacks the weight lm_head\.weight"):
        load_model(directory)


def test_wrong_shape(copy_of):
    directory = copy_of("qwen2")
    edit_weights(directory, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(63)}))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj\.bias has shape \[63\] but the config "
                                         r"needs \[64\]"):
        load_model(directory)


def test_unexpected_weight(copy_of):
    directory = copy_of("llama")  # no attention_bias
    edit_weights(directory, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}))
    with pytest.raises(ValueError, match=r"holds the weight model\.layers\.0\.self_attn\.q_proj\.bias"):
        load_model(directory)


def test_no_weights_or_no_config(copy_of, tmp_path):
    directory = copy_of("llama")
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors weights"):
        load_model(directory)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(directory)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_model(tmp_path / "nowhere")


def test_bad_step_input_changes_nothing(models):
    model, _ = models("llama")
    cache = model.new_cache(num_blocks=16, block_size=4)
    seqs, _ = model.start(cache, [[1, 2, 3], [4, 5]])
    state = ([cache.tokens(s) for s in seqs], cache.stats())
    with pytest.raises(ValueError, match=r"new_tokens\[1\] is empty: every sequence needs at least one token"):
        model.step(cache, seqs, [[1], []])
    with pytest.raises(ValueError, match=r"new_tokens\[1\]\[2\] = 128 is out of range: expected a token id in "
                                         r"\[0, 128\)"):
        model.step(cache, seqs, [[1], [2, 3, 128]])
    with pytest.raises(ValueError, match=r"new_tokens\[0\]\[0\] = -1 is out of range"):
        model.step(cache, seqs, [[-1], [2]])
    with pytest.raises(TypeError, match="must hold integer token ids"):
        model.step(cache, seqs, [[1.5], [2]])
    with pytest.raises(ValueError, match="2 sequences but 1 token lists"):
        model.step(cache, seqs, [[1]])
    with pytest.raises(ValueError, match=r"logit_rows holds 3, out of range: expected rows in \[0, 3\)"):
        model.step(cache, seqs, [[1], [2, 3]], logit_rows=[0, 3])
    with pytest.raises(ValueError, match=r"hidden_rows must be a 1-D tensor"):
        model.step(cache, seqs, [[1], [2, 3]], hidden_rows=[[0]])
    with pytest.raises(ValueError, match=r"prompts\[0\]\[1\] = 500 is out of range"):
        model.start(cache, [[1, 500]])
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        model.start(cache, [[1], []])
    assert ([cache.tokens(s) for s in seqs], cache.stats()) == state
    other = ponder.kv.KVCache(num_layers=2, num_kv_heads=3, head_dim=16, num_blocks=4)
    with pytest.raises(ValueError, match=r"num_kv_heads=4.*make it with model.new_cache"):
        model.step(other, [0], [[1]])
    with pytest.raises(ValueError, match=r"input_ids\[0, 1\] = 128 is out of range"):
        model.forward_dense(torch.tensor([[0, 128]]))
    with pytest.raises(ValueError, match=r"input_ids must be an int64 tensor of shape \[batch, length >= 1\]"):
        model.forward_dense(torch.tensor([1, 2]))
    cache.check_invariants()


def test_start_frees_its_sequences_when_the_step_fails(models):
    model, _ = models("llama")
    cache = model.new_cache(num_blocks=3, block_size=4)
    with pytest.raises(ponder.kv.OutOfBlocks):
        model.start(cache, [[1] * 8, [2] * 8])  # four blocks needed
    assert cache.stats().sequences == 0 and cache.stats().blocks.used == 0
    cache.check_invariants()
    seqs, _ = model.start(cache, [[1] * 8, [1] * 8, [1] * 8])  # one prompt thrice: two blocks, shared
    assert cache.stats().blocks.used == 2
    for seq in seqs:
        cache.free(seq)
    with pytest.raises(ValueError, match=r"prompts\[2\]\[0\] = 500 is out of range"):
        model.start(cache, [[1] * 8, [1] * 8, [500]])
    assert cache.stats().sequences == 0
    cache.check_invariants()


def test_load_model_is_exported():
    assert ponder.load_model is load_model and "load_model" in ponder.__all__
