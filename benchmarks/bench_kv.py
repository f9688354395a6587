"""Benchmark ponder's paged KV cache: fork cost, tree memory, decode throughput.

Run ``python benchmarks/bench_kv.py`` (``--help`` lists the flags). Three parts, each
against its baseline in the same run, on one small Llama-shaped model (4 layers,
hidden 512, 8 query heads, 4 KV heads of dimension 64, vocabulary 32000, float32):

fork
    ``KVCache.fork(root, n)`` of a sequence holding a prefix of P tokens, then
    ``free`` of the n children (timed together: a search frees what it forks, and
    the pair is what it pays). Baselines do what a ``transformers`` search does with a
    ``DynamicCache`` holding the prefix: ``reorder_cache`` with n copies of row 0 (an
    ``index_select`` of every layer's K/V into a batch of n, what beam search does),
    and ``copy.deepcopy`` of the cache once per child. The ratio is against the faster
    baseline. Baselines whose copies would exceed ``--max-copy-gb`` are skipped.
tree memory
    A beam search shape over a 1024-token prompt: 16 beams; each step every live beam
    is extended by a step of 20 to 40 tokens, then the best 4 (here: a seeded random
    choice) are kept and each is forked into 4 children for the next step, the other 12
    freed. After each step the cache's bytes in use are compared with the bytes of the
    unique tokens the live beams hold (their union as a tree) and with what 16 separate
    caches would hold (every beam's whole history).
decode
    Tokens per second of decode steps for 64 sequences sharing a 1024-token prefix:
    ponder's model runner (prefill once, fork into 64, ``model.step`` with one new
    token per sequence) against ``transformers``' ``LlamaForCausalLM`` with a
    ``DynamicCache`` of the same 64 rows (prefilled once, expanded by
    ``batch_repeat_interleave``), on the same checkpoint. Each decode step feeds the
    greedy token of the previous step; only the steps are timed.

Targets (from the issue): fork time flat in the prefix length and at 4096 tokens at
least 100x cheaper than copying; tree memory within 1.1x of the unique tokens' bytes;
decode throughput at least 2x that of transformers. The script ends with one PASS/FAIL
line per target.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time

import torch

from common import Column, make_parser, measure, print_table, profiling, setup, write_json

NAME = "kv"
MODEL = dict(num_hidden_layers=4, hidden_size=512, intermediate_size=1408, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096)
HEAD_DIM = MODEL["hidden_size"] // MODEL["num_attention_heads"]
BLOCK_SIZE = 16
FORK_RATIO_TARGET, FORK_TARGET_PREFIX = 100.0, 4096
FORK_FLATNESS_LIMIT = 2.0  # "flat": the largest prefix's fork time within this factor of the smallest's
MEMORY_TARGET = 1.1
DECODE_TARGET = 2.0


def parse_args(argv=None):
    parser = make_parser(NAME, "Fork cost, tree memory and decode throughput of ponder's paged KV cache.")
    parser.add_argument("--prefix", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096, 8192],
                        help="prefix lengths for the fork part (default: %(default)s)")
    parser.add_argument("--children", type=int, nargs="+", default=[4, 16, 64],
                        help="children per fork (default: %(default)s)")
    parser.add_argument("--max-copy-gb", type=float, default=4.0,
                        help="skip a copying baseline whose copies exceed this many GB (default: %(default)s)")
    parser.add_argument("--tree-steps", type=int, default=40, help="beam steps in the memory part (default: %(default)s)")
    parser.add_argument("--tree-block-size", type=int, nargs="+", default=[BLOCK_SIZE, 8],
                        help="block sizes of the memory part; the target is judged at the first (default: %(default)s)")
    parser.add_argument("--decode-seqs", type=int, default=64, help="sequences in the decode part (default: %(default)s)")
    parser.add_argument("--decode-prefix", type=int, default=1024, help="shared prefix in the decode part (default: %(default)s)")
    parser.add_argument("--decode-steps", type=int, default=16, help="timed decode steps (default: %(default)s)")
    parser.add_argument("--skip", choices=["fork", "memory", "decode"], nargs="*", default=[],
                        help="parts not to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.prefix, args.children, args.tree_steps = [128, 1024], [4, 16], 3
        args.decode_seqs, args.decode_prefix, args.decode_steps = 8, 128, 3
    return args


def new_cache(num_blocks: int, device: torch.device, block_size: int = BLOCK_SIZE):
    from ponder.kv import KVCache

    return KVCache(num_layers=MODEL["num_hidden_layers"], num_kv_heads=MODEL["num_key_value_heads"],
                   head_dim=HEAD_DIM, block_size=block_size, num_blocks=num_blocks, device=device)


def fill(cache, tokens: list[int]) -> int:
    """A sequence holding ``tokens`` (bookkeeping only: fork cost does not depend on the K/V values)."""
    seq, cached = cache.add_sequence(tokens)
    with cache.step([seq], [tokens[cached:]]):
        pass
    return seq


# --------------------------------------------------------------------------- fork


def dynamic_cache(prefix: int, device: torch.device):
    from transformers import DynamicCache

    shape = (1, MODEL["num_key_value_heads"], prefix, HEAD_DIM)
    return [(torch.randn(shape, device=device), torch.randn(shape, device=device))
            for _ in range(MODEL["num_hidden_layers"])], DynamicCache


def bench_fork(args, device) -> list[dict]:
    rows = []
    for prefix in args.prefix:
        cache = new_cache(prefix // BLOCK_SIZE + 2, device)
        root = fill(cache, list(range(prefix)))
        pairs, dynamic = dynamic_cache(prefix, device)
        prefix_bytes = sum(k.numel() + v.numel() for k, v in pairs) * 4
        for n in args.children:
            def fork_and_free():
                for child in cache.fork(root, n):
                    cache.free(child)

            row = {"prefix": prefix, "children": n, "ponder_ms": measure(fork_and_free, device=device,
                                                                           label=f"fork P={prefix} n={n}").median}
            if prefix_bytes * n <= args.max_copy_gb * 1e9:
                zeros = torch.zeros(n, dtype=torch.long, device=device)
                row["index_select_ms"] = measure(lambda: dynamic(pairs).reorder_cache(zeros), device=device,
                                                 max_reps=20, label=f"index_select P={prefix} n={n}").median
                source = dynamic(pairs)
                row["deepcopy_ms"] = measure(lambda: [copy.deepcopy(source) for _ in range(n)], device=device,
                                             max_reps=10, label=f"deepcopy P={prefix} n={n}").median
                row["copy_ms"] = min(row["index_select_ms"], row["deepcopy_ms"])
                row["speedup"] = row["copy_ms"] / row["ponder_ms"]
            rows.append(row)
            print(f"  fork P={prefix} n={n} done", file=sys.stderr, flush=True)
        cache.check_invariants()
    return rows


FORK_COLUMNS = [Column("prefix", "prefix", 7), Column("children", "n", 4), Column("ponder_ms", "ponder", 9, ".4f"),
                Column("index_select_ms", "idx_sel", 9, ".3f"), Column("deepcopy_ms", "deepcopy", 9, ".3f"),
                Column("speedup", "x", 9, ".0f")]


# --------------------------------------------------------------------------- tree memory


def bench_memory(args, device, block_size: int) -> list[dict]:
    """A 16-beam, width-4 search tree: bytes in use vs unique tokens vs 16 separate caches, per step."""
    beams, width, prompt_len = 16, 4, 1024
    gen = torch.Generator().manual_seed(0)
    capacity = prompt_len + beams * args.tree_steps * 40
    cache = new_cache(capacity // block_size + beams * (args.tree_steps + 2), device, block_size)
    token_bytes = cache.block_bytes // block_size
    root = fill(cache, list(range(prompt_len)))
    history = {root: [("p", i) for i in range(prompt_len)]}  # token nodes of each live beam
    live = cache.fork(root, beams)
    for child in live:
        history[child] = history[root]
    cache.free(root)
    del history[root]
    rows = []
    for step in range(args.tree_steps):
        lengths = torch.randint(20, 41, (len(live),), generator=gen).tolist()
        with cache.step(live, [[0] * n for n in lengths]):
            pass
        for seq, n in zip(live, lengths):
            history[seq] = history[seq] + [(seq, step, i) for i in range(n)]
        unique = len(set().union(*history.values()))
        separate = sum(len(h) for h in history.values())
        used = cache.stats().bytes_used
        rows.append({"block_size": block_size, "step": step + 1, "unique_tokens": unique,
                     "used_mb": used / 1e6, "unique_mb": unique * token_bytes / 1e6,
                     "separate_mb": separate * token_bytes / 1e6, "vs_unique": used / (unique * token_bytes),
                     "vs_separate": used / (separate * token_bytes)})
        # Keep beams // width survivors (a seeded random choice stands in for the verifier) and fork each.
        keep = set(torch.randperm(len(live), generator=gen)[:beams // width].tolist())
        next_live = []
        for i, seq in enumerate(live):
            if i in keep:
                children = cache.fork(seq, width)
                next_live += children
                for child in children:
                    history[child] = history[seq]
            cache.free(seq)
            del history[seq]
        live = next_live
    cache.check_invariants()
    return rows


def fan_out_memory(device, block_size: int, branch_tokens: int = 256) -> dict:
    """The plainest 16-beam tree: a 1024-token prompt and 16 branches of ``branch_tokens`` each."""
    beams, prompt_len = 16, 1024
    cache = new_cache((prompt_len + beams * branch_tokens) // block_size + beams + 1, device, block_size)
    token_bytes = cache.block_bytes // block_size
    root = fill(cache, list(range(prompt_len)))
    branches = cache.fork(root, beams)
    cache.free(root)
    with cache.step(branches, [[0] * branch_tokens] * beams):
        pass
    unique, separate = prompt_len + beams * branch_tokens, beams * (prompt_len + branch_tokens)
    used = cache.stats().bytes_used
    return {"block_size": block_size, "shape": f"fan-out 16 x {branch_tokens}", "median_vs_unique": used / (unique * token_bytes),
            "last_used_mb": used / 1e6, "last_separate_mb": separate * token_bytes / 1e6,
            "last_vs_separate": used / (separate * token_bytes)}


def summarize_memory(rows: list[dict]) -> list[dict]:
    """One line per block size: the ratios' median and worst over the steps, and at the last step."""
    summary = []
    for block_size in dict.fromkeys(r["block_size"] for r in rows):
        mine = [r for r in rows if r["block_size"] == block_size]
        ratios = sorted(r["vs_unique"] for r in mine)
        summary.append({"block_size": block_size, "shape": f"beam search, {len(mine)} steps",
                        "median_vs_unique": ratios[len(ratios) // 2],
                        "worst_vs_unique": ratios[-1], "last_vs_unique": mine[-1]["vs_unique"],
                        "last_vs_separate": mine[-1]["vs_separate"], "last_used_mb": mine[-1]["used_mb"],
                        "last_separate_mb": mine[-1]["separate_mb"]})
    return summary


MEMORY_COLUMNS = [Column("block_size", "block", 6), Column("shape", "tree", 22),
                  Column("median_vs_unique", "used/unique (median)", 21, ".3f"),
                  Column("worst_vs_unique", "worst", 7, ".3f"), Column("last_vs_unique", "last", 7, ".3f"),
                  Column("last_used_mb", "used MB", 9, ".1f"), Column("last_separate_mb", "16 caches MB", 13, ".1f"),
                  Column("last_vs_separate", "used/16", 8, ".3f")]


# --------------------------------------------------------------------------- decode


def bench_decode(args, device) -> list[dict]:
    import ponder
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**MODEL)).to(device).eval()
    n, prefix, steps = args.decode_seqs, args.decode_prefix, args.decode_steps
    prompt = torch.randint(0, MODEL["vocab_size"], (prefix,)).tolist()
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        model = ponder.load_model(path, device=device)

    cache = model.new_cache(max_tokens=prefix + n * (steps + 2) * BLOCK_SIZE)
    (root,), out = model.start(cache, [prompt])
    seqs = cache.fork(root, n)
    first = out.logits.argmax(-1).expand(n)

    def ponder_decode():
        tokens = first
        for _ in range(steps):
            tokens = model.step(cache, seqs, tokens[:, None].tolist()).logits.argmax(-1)
        return tokens

    with torch.inference_mode():
        prefill = DynamicCache(config=hf.config)
        hf(torch.tensor([prompt], device=device), past_key_values=prefill, use_cache=True)
        pairs = [(layer.keys, layer.values) for layer in prefill.layers]

        def transformers_decode():
            kv = DynamicCache(ddp_cache_data=pairs, config=hf.config)
            kv.batch_repeat_interleave(n)
            tokens = first[:, None]
            for _ in range(steps):
                tokens = hf(tokens, past_key_values=kv, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
            return tokens[:, 0]

        # Both start from the same prefix and feed their own greedy tokens: they must agree.
        ponder_tokens, hf_tokens = ponder_decode(), transformers_decode()
        agree = float((ponder_tokens == hf_tokens).float().mean())
        for seq in seqs:  # back to the shared prefix for the timed runs
            cache.free(seq)
        seqs = cache.fork(root, n)

        def ponder_timed():
            nonlocal seqs
            ponder_decode()
            for seq in seqs:
                cache.free(seq)
            seqs = cache.fork(root, n)

        ponder_t = measure(ponder_timed, device=device, min_reps=3, max_reps=10, label="ponder decode")
        hf_t = measure(transformers_decode, device=device, min_reps=3, max_reps=10, label="transformers decode")
    tokens = n * steps
    row = {"seqs": n, "prefix": prefix, "steps": steps, "ponder_tok_s": tokens / ponder_t.median * 1e3,
           "transformers_tok_s": tokens / hf_t.median * 1e3, "greedy_agreement": agree}
    row["speedup"] = row["ponder_tok_s"] / row["transformers_tok_s"]
    return [row]


DECODE_COLUMNS = [Column("seqs", "seqs", 5), Column("prefix", "prefix", 7), Column("steps", "steps", 6),
                  Column("ponder_tok_s", "ponder tok/s", 13, ".0f"),
                  Column("transformers_tok_s", "transformers tok/s", 19, ".0f"), Column("speedup", "x", 6, ".2f"),
                  Column("greedy_agreement", "same tokens", 12, ".2f")]


# --------------------------------------------------------------------------- targets


def check_targets(fork_rows, memory_summary, decode_rows) -> list[dict]:
    verdicts = []

    def verdict(target, value, ok):
        verdicts.append({"target": target, "value": value,
                         "status": "NOT MEASURED" if value is None else ("PASS" if ok else "FAIL")})

    at_target = [r for r in fork_rows if r["prefix"] == FORK_TARGET_PREFIX and "speedup" in r]
    worst = min((r["speedup"] for r in at_target), default=None)
    verdict(f"fork >= {FORK_RATIO_TARGET:g}x cheaper than copying at {FORK_TARGET_PREFIX} tokens (worst n)", worst,
            worst is not None and worst >= FORK_RATIO_TARGET)
    spreads = []
    for n in sorted({r["children"] for r in fork_rows}):
        times = [r["ponder_ms"] for r in sorted(fork_rows, key=lambda r: r["prefix"]) if r["children"] == n]
        if len(times) > 1:
            spreads.append(max(times) / min(times))
    spread = max(spreads, default=None)
    verdict(f"fork time flat in prefix length (max/min over prefixes <= {FORK_FLATNESS_LIMIT:g})", spread,
            spread is not None and spread <= FORK_FLATNESS_LIMIT)
    # Beam trees: the median step and the worst step (the first, when partly filled last blocks
    # weigh most) at every block size; the fan-out tree at the default block size.
    for row in memory_summary:
        beam = "worst_vs_unique" in row
        if not beam and row["block_size"] != memory_summary[0]["block_size"]:
            continue
        for key, where in ([("median_vs_unique", "median step"), ("worst_vs_unique", "worst step")] if beam
                           else [("median_vs_unique", "")]):
            memory = row[key]
            verdict(f"tree memory <= {MEMORY_TARGET:g}x the unique tokens' bytes ({row['shape']}, block "
                    f"{row['block_size']}{', ' + where if where else ''})", memory, memory <= MEMORY_TARGET)
    decode = decode_rows[0]["speedup"] if decode_rows else None
    verdict(f"decode throughput >= {DECODE_TARGET:g}x transformers", decode,
            decode is not None and decode >= DECODE_TARGET)
    return verdicts


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    print(f"model: {MODEL}, block size {BLOCK_SIZE}, float32, {torch.get_num_threads()} threads")
    fork_rows, memory_rows, memory_summary, decode_rows = [], [], [], []
    start = time.perf_counter()
    with profiling(args.profile, device):
        if "fork" not in args.skip:
            fork_rows = bench_fork(args, device)
            print_table(FORK_COLUMNS, fork_rows, title="\nfork + free of n children (ms, median) vs copying a "
                                                       "DynamicCache (index_select / deepcopy per child)")
        if "memory" not in args.skip:
            memory_rows = [row for block_size in args.tree_block_size for row in bench_memory(args, device, block_size)]
            memory_summary = summarize_memory(memory_rows)
            memory_summary += [fan_out_memory(device, block_size) for block_size in args.tree_block_size]
            print_table(MEMORY_COLUMNS, memory_summary,
                        title="\n16-beam trees over a 1024-token prompt (beam search: width 4, steps of 20-40 tokens): "
                              "KV bytes in use / bytes of the live beams' unique tokens")
        if "decode" not in args.skip:
            decode_rows = bench_decode(args, device)
            print_table(DECODE_COLUMNS, decode_rows, title="\ndecode steps, shared prefix: ponder model runner vs "
                                                           "transformers + DynamicCache")
    print(f"\n[{time.perf_counter() - start:.0f} s]")
    verdicts = check_targets(fork_rows, memory_summary, decode_rows)
    for v in verdicts:
        shown = "-" if v["value"] is None else f"{v['value']:.3g}"
        print(f"{v['status']:>12}  {v['target']}: {shown}")
    path = write_json(args.json, name=NAME, device=device,
                      config={"model": MODEL, "block_size": BLOCK_SIZE, "prefixes": args.prefix,
                              "children": args.children, "tree_steps": args.tree_steps,
                              "tree_block_sizes": args.tree_block_size,
                              "decode": {"seqs": args.decode_seqs, "prefix": args.decode_prefix,
                                         "steps": args.decode_steps}, "quick": args.quick},
                      results={"fork": fork_rows, "memory": memory_rows, "memory_summary": memory_summary,
                               "decode": decode_rows}, targets=verdicts)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
