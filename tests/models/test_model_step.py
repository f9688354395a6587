"""CausalLM.step / start on the paged cache equal transformers' forward of each full history, from scratch.

Every check compares float32 logits (or final hidden states) within 1e-4 with
transformers run on the sequence's complete token history. Block size 4 keeps block
boundaries, copy-on-write of half-full blocks and prefix-cache hits frequent.
"""

from __future__ import annotations

import pytest
import torch

import ponder
from checkpoints import VARIANTS, HFOracle, Tracker, load_hf_model, save_checkpoint


def tokens(n: int, seed: int, vocab: int = 128) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill_then_decode_and_extend(tracker, variant):
    run = tracker(variant)
    prompts = [tokens(7, 1), tokens(12, 2), tokens(1, 3)]  # mid-block, block-aligned, a single token
    seqs = run.start(prompts)
    for i in range(3):  # decode: one token each
        run.step(seqs, [[t] for t in tokens(3, 10 + i)])
    run.step(seqs, [tokens(5, 20), [7], tokens(9, 21)])  # extend: several tokens on top of a cached prefix
    for seq in seqs:
        run.check_kv(seq)


def test_all_rows_of_a_prefill(tracker):
    run = tracker("llama3_rope")
    prompt = tokens(30, 4)
    seq, cached = run.cache.add_sequence(prompt)
    assert cached == 0
    run.history[seq] = []
    out = run.step([seq], [prompt], logit_rows=torch.arange(30), hidden_rows=torch.arange(30))
    torch.testing.assert_close(out.logits, run.oracle.logits(prompt), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.hidden, run.oracle.hidden(prompt), atol=1e-4, rtol=0)


def test_hidden_rows_and_logit_rows(tracker):
    run = tracker("qwen2")
    seqs = run.start([tokens(5, 5), tokens(9, 6)])
    new = [tokens(3, 7), tokens(4, 8)]  # packed rows 0-2 belong to seqs[0], 3-6 to seqs[1]
    out = run.step(seqs, new, logit_rows=[6, 0, 4], hidden_rows=torch.tensor([2, 3]))
    h0, h1 = run.history[seqs[0]], run.history[seqs[1]]
    want = torch.stack([run.oracle.logits(h1)[-1], run.oracle.logits(h0)[5], run.oracle.logits(h1)[10]])
    torch.testing.assert_close(out.logits, want, atol=1e-4, rtol=0)
    assert out.hidden.dtype == torch.float32 and out.hidden.shape == (2, 64)
    torch.testing.assert_close(out.hidden, torch.stack([run.oracle.hidden(h0)[-1], run.oracle.hidden(h1)[9]]),
                               atol=1e-4, rtol=0)
    assert run.step(seqs, [[1], [2]]).hidden is None


def test_fork_children_diverge_with_different_token_counts(tracker):
    run = tracker("llama_gqa")
    root, = run.start([tokens(10, 9)])  # 10 tokens: the last block is half full
    children = run.fork(root, 3)
    plan_before = [run.cache.block_table(c) for c in children]
    run.step(children, [[1], tokens(3, 11), tokens(6, 12)])
    # Each child wrote into the shared half-full block: each got its own copy of it.
    last_blocks = {run.cache.block_table(c)[2] for c in children}
    assert len(last_blocks) == 3 and run.cache.block_table(root)[2] not in last_blocks
    assert all(run.cache.block_table(c)[:2] == plan_before[0][:2] for c in children)  # full blocks stay shared
    run.step([root, *children], [[5], [6, 7], [8], tokens(4, 13)])
    for seq in [root, *children]:
        run.check_kv(seq)


def test_a_prompt_given_twice_is_computed_once_and_forked(tracker):
    run = tracker("llama_gqa")
    a, b = tokens(10, 40), tokens(6, 41)  # 10 tokens: two full blocks and a half-full one
    seqs = run.start([a, b, a, a])  # each row's logits checked against transformers
    assert len(set(seqs)) == 4
    assert run.cache.stats().blocks.used == 3 + 2  # the copies of ``a`` hold its blocks, no new ones
    assert [run.cache.block_table(s) for s in seqs[2:]] == [run.cache.block_table(seqs[0])] * 2
    run.step(seqs, [[1], [2], tokens(3, 42), [1]])  # the copies diverge: copy-on-write of the half-full block
    assert len({run.cache.block_table(s)[2] for s in (seqs[0], seqs[2], seqs[3])}) == 3
    for seq in seqs:
        run.check_kv(seq)
    run.free(seqs[0])  # the first of the copies goes; the others keep its blocks
    run.step(seqs[1:], [[3], [4], [5]])
    for seq in seqs[1:]:
        run.check_kv(seq)


def test_a_repeated_prompt_counts_its_tokens_once(models):
    model, _ = models("llama")
    cache = model.new_cache(num_blocks=16, block_size=4)
    _, out = model.start(cache, [[1, 2, 3], [1, 2, 3], [4, 5], [1, 2, 3]])
    assert out.num_tokens == 5 and out.logits.shape == (4, model.config.vocab_size)
    assert torch.equal(out.logits[0], out.logits[1]) and torch.equal(out.logits[0], out.logits[3])


def test_copy_on_write_keeps_the_parent_intact(tracker):
    run = tracker("llama")
    parent, = run.start([tokens(6, 14)])
    child, = run.fork(parent, 1)
    shared = run.cache.block_table(parent)[1]
    # Bitwise: the block's unwritten slots hold what torch.empty left there, NaN patterns included.
    before_k = run.cache.k[:, shared].view(torch.int32).clone()
    run.step([child], [tokens(5, 15)])  # writes past the fork point of the shared block: copy-on-write
    assert run.cache.block_table(child)[1] != shared
    assert torch.equal(run.cache.k[:, shared].view(torch.int32), before_k)  # the parent's block is untouched
    run.step([parent], [[3, 4]])  # the parent, now the sole owner, writes in place
    assert run.cache.block_table(parent)[1] == shared
    run.check_kv(parent)
    run.check_kv(child)


def test_freed_branch_blocks_are_reused(tracker):
    run = tracker("mistral", num_blocks=12)
    root, = run.start([tokens(8, 16)])  # two full blocks
    a, b = run.fork(root, 2)
    run.step([a, b], [tokens(9, 17), tokens(6, 18)])
    own_a = set(run.cache.block_table(a)) - set(run.cache.block_table(root))
    run.free(a)
    assert run.cache.stats().blocks.free + run.cache.stats().blocks.cached >= len(own_a)
    new, = run.start([tokens(11, 19)])  # needs three blocks: the pool has few left besides a's
    run.step([new, b, root], [[1, 2], [3], [4, 5, 6]])  # a prefill-sized, a decode and an extend in one step
    assert own_a & set(run.cache.block_table(new))  # some of a's blocks now hold the new sequence
    for seq in (root, b, new):
        run.check_kv(seq)


def test_prefix_cache_hit(tracker):
    run = tracker("llama_tied")
    prompt = tokens(14, 20)  # three full blocks of 4 and two tokens
    first, = run.start([prompt])
    second, cached = run.cache.add_sequence(prompt)
    assert cached == 12
    assert run.cache.block_table(second) == run.cache.block_table(first)[:3]
    run.history[second] = prompt[:12]
    run.step([second], [prompt[12:]])
    run.check_kv(second)
    # model.start reuses the cached blocks too, also after every holder is gone.
    run.free(first)
    run.free(second)
    blocks = run.cache.stats().blocks
    third, = run.start([prompt + [9]])
    assert run.cache.stats().blocks.cached < blocks.cached  # it took cached blocks back
    run.check_kv(third)


def test_sliding_window_is_refused_beyond_the_window(tmp_path):
    directory = save_checkpoint(tmp_path, "mistral", sliding_window=8)
    model = ponder.load_model(directory)
    cache = model.new_cache(num_blocks=16, block_size=4)
    (seq,), _ = model.start(cache, [tokens(8, 21)])  # exactly the window: fine
    state = (cache.tokens(seq), cache.block_table(seq), cache.stats())
    with pytest.raises(NotImplementedError, match="sliding window of 8"):
        model.step(cache, [seq], [[1]])
    assert (cache.tokens(seq), cache.block_table(seq), cache.stats()) == state  # rolled back
    with pytest.raises(NotImplementedError, match="sliding window of 8"):
        model.forward_dense(torch.zeros(1, 9, dtype=torch.int64))
    cache.check_invariants()


def test_head_dim_from_config(tmp_path):
    directory = save_checkpoint(tmp_path, "llama_gqa", head_dim=8)  # not hidden_size / num_heads = 16
    model = ponder.load_model(directory)
    assert (model.config.head_dim, model.layers[0].qkv.weight.shape[0]) == (8, 4 * 8 + 2 * 8)
    run = Tracker(model, load_hf_model(directory))
    seqs = run.start([tokens(6, 25), tokens(3, 26)])
    run.step(seqs, [[1, 2], [3]])
    run.check_kv(seqs[0])


def test_step_in_bfloat16_is_close_to_float32(checkpoint):
    directory = checkpoint("llama_gqa")
    full, half = ponder.load_model(directory), ponder.load_model(directory, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.new_cache(max_tokens=64).k.dtype == torch.bfloat16
    outs = []
    for model in (full, half):
        cache = model.new_cache(max_tokens=64, block_size=4)
        seqs, first = model.start(cache, [tokens(9, 22), tokens(3, 23)])
        outs.append((first.logits, model.step(cache, seqs, [[1], [2, 3]], hidden_rows=[0]).logits))
    for want, got in zip(*outs):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=0.15, rtol=0.05)


def test_oracle_agrees_with_incremental_transformers(models):
    """Sanity check of the oracle itself: from-scratch logits equal transformers' own KV-cached decode."""
    _, hf = models("llama")
    oracle, history = HFOracle(hf), tokens(6, 24)
    with torch.no_grad():
        out = hf(torch.tensor([history]), use_cache=True)
        nxt = hf(torch.tensor([[5]]), past_key_values=out.past_key_values, use_cache=True)
    torch.testing.assert_close(nxt.logits[0, -1], oracle.logits(history + [5])[-1], atol=1e-5, rtol=0)


def test_a_model_without_lm_head_gives_hidden_states_only(checkpoint, models):
    full, hf = models("llama")
    headless = ponder.load_model(checkpoint("llama"), lm_head=False)  # the checkpoint's lm_head.weight is ignored
    assert headless.lm_head is None and not headless.has_lm_head
    prompts = [[5, 6, 7, 8, 9], [3, 4]]
    cache = headless.new_cache(num_blocks=8, block_size=4)
    seqs, out = headless.start(cache, prompts, hidden=True)
    assert out.logits is None and out.num_tokens == 7
    oracle = HFOracle(hf)
    for i, prompt in enumerate(prompts):
        torch.testing.assert_close(out.hidden[i], oracle.hidden(prompt)[-1], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="logit_rows given, but this model has no LM head"):
        headless.step(cache, seqs[:1], [[1]], logit_rows=[0])
    with pytest.raises(ValueError, match="built without an LM head"):
        headless.forward_dense(torch.tensor([prompts[0]]))
    out = headless.step(cache, seqs, [[1, 2], [3]], hidden_rows=[])
    assert out.logits is None and out.hidden.shape == (0, headless.config.hidden_size) and out.num_tokens == 3


@pytest.mark.skipif(not ponder.ops._backend.has_cpu_kernels(), reason="the extension is not built")
@pytest.mark.parametrize("variant", ["llama_gqa", "qwen2"])
def test_cpu_step_is_batch_invariant(checkpoint, variant):
    """On CPU in float32 a sequence's logits are bitwise the same alone or batched with others.

    Every op of the paged forward reads one sequence's rows only, in an order that does not
    depend on the batch (the matmuls are ponder.linear): batching changes the speed, never
    the numbers, so a search's choices do not depend on how its branches were batched.
    """
    model = ponder.load_model(checkpoint(variant))
    assert model._paged_linear() is torch.ops.ponder.linear
    prompt, others = tokens(11, 30), [tokens(5, 31), tokens(23, 32), tokens(2, 33)]
    runs = []
    for batch in ([prompt], [others[0], prompt, *others[1:]], [*others, *others, prompt, *others]):
        cache = model.new_cache(max_tokens=2048, block_size=4)
        seqs, first = model.start(cache, batch)
        i = batch.index(prompt)
        logits = [first.logits[i]]
        for t in range(3):  # decode steps next to the other sequences' own tokens
            out = model.step(cache, seqs, [[(7 * t + (0 if j == i else j)) % 128] for j in range(len(seqs))])
            logits.append(out.logits[i])
        runs.append(torch.stack(logits))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
