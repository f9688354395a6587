"""Benchmark ponder's beam search against a search-and-learn-style pipeline written with transformers.

Run ``python benchmarks/bench_search.py`` (``--help`` lists the flags). Both sides run
beam search with N = 16 beams and beam width M = 4 for 10 steps of up to 32 tokens,
sampling at temperature 1 with top-k 8, on the same small Llama-shaped policy and PRM
(4 layers, hidden 512, 8 query heads, 4 KV heads; the built-in task's character
tokenizer; the PRM a value-head ``LlamaForTokenClassification``), random weights with
the newline and end-of-sequence logits pushed out of the top-k so that every step runs
its full 32 tokens on both sides:

ponder
    :func:`ponder.search.beam_search` with a :class:`~ponder.search.ModelPolicy` (paged
    KV cache, children forked, one batched step per token position) and a
    :class:`~ponder.search.PRMVerifier` (incremental PRM on its own forked KV tree).
transformers (search-and-learn style)
    each step, every beam's whole text (prompt and steps so far) is re-encoded and
    ``generate`` samples its next step in one padded batch, stopping at the newline (one
    token of this tokenizer) or end-of-sequence;
    the PRM then re-scores every candidate's full text in one padded batch; the best
    N / M are kept and each is repeated M times for the next step.

Reported: wall time of each side and the ratio; ponder's breakdown into sampling,
policy model, PRM and everything else, and the share of its wall time outside model
forwards (everything but the policy and PRM forwards). Targets (from the issue): at
least 5x less wall time, and under 15% of ponder's wall time outside model forwards.
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

from common import Column, make_parser, measure, print_table, profiling, setup, write_json

NAME = "search"
MODEL = dict(num_hidden_layers=4, hidden_size=512, intermediate_size=1408, num_attention_heads=8,
             num_key_value_heads=4, max_position_embeddings=4096)
PROMPT = "Q: {question}\nA:\n"
QUESTION = "(12 - 5) * 3 + 48 / 6 - 7 * (2 + 9)"
WALL_TARGET, OUTSIDE_TARGET = 5.0, 0.15


def parse_args(argv=None):
    parser = make_parser(NAME, "Beam search end to end: ponder vs a transformers search-and-learn-style pipeline.")
    parser.add_argument("--beams", type=int, default=16, help="N (default: %(default)s)")
    parser.add_argument("--width", type=int, default=4, help="beam width M (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="search steps (default: %(default)s)")
    parser.add_argument("--step-tokens", type=int, default=32, help="tokens per step at most (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each side (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.beams, args.width, args.steps, args.step_tokens, args.reps = 4, 2, 2, 8, 1
    return args


def make_checkpoints(directory: str) -> tuple[str, str]:
    """Random policy (LlamaForCausalLM) and PRM (LlamaForTokenClassification, one label), with the task tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    from ponder.tasks import tokenizer as task_tokenizer

    tokenizer = task_tokenizer.build_tokenizer()
    config = dict(**MODEL, vocab_size=tokenizer.get_vocab_size(), pad_token_id=0, tie_word_embeddings=False)
    paths = []
    for name, cls, extra in (("policy", LlamaForCausalLM, {}), ("prm", LlamaForTokenClassification, {"num_labels": 1})):
        torch.manual_seed(len(paths))
        model = cls(LlamaConfig(**config, **extra))
        with torch.no_grad():  # unit-scale weights, so that steps and scores differ
            for pname, param in model.named_parameters():
                if param.dim() == 2:
                    param.normal_(0.0, 1.0 if "embed" in pname else param.shape[1] ** -0.5)
            if name == "policy":  # newline and EOS get a zero logit, far below the top 8 of unit-scale logits
                for token in ("\n", task_tokenizer.EOS):
                    model.lm_head.weight[tokenizer.token_to_id(token)] = 0.0
                model.lm_head.weight.mul_(4.0)
        path = f"{directory}/{name}"
        model.save_pretrained(path)
        task_tokenizer.save(path)
        paths.append(path)
    return paths[0], paths[1]


def ponder_search(policy_dir: str, prm_dir: str, args):
    """A callable running ponder's beam search once, fresh caches each time; returns the SearchResult."""
    import ponder
    from ponder.prm import load_prm
    from ponder.search import ModelPolicy, PRMVerifier, Sampling, beam_search
    from ponder.tasks import tokenizer as task_tokenizer

    model = ponder.load_model(policy_dir)
    prm = load_prm(prm_dir, format="ponder-arith", head="value")
    tokenizer = task_tokenizer.build_tokenizer()
    capacity = 4 * args.beams * (args.steps + 2) * (args.step_tokens + 2) + 4096

    def run():
        policy = ModelPolicy(model, tokenizer, prompt_template=PROMPT, max_step_tokens=args.step_tokens,
                             max_steps=args.steps, cache_tokens=capacity)
        verifier = PRMVerifier(prm.scorer(capacity))
        return beam_search(policy, verifier, [QUESTION], args.beams, args.width, max_steps=args.steps,
                           answer_of=lambda branch: branch.text[-1:], sampling=Sampling(top_k=8), seed=0)

    return run


def transformers_search(policy_dir: str, prm_dir: str, args):
    """A callable running the search-and-learn-style beam search once with transformers."""
    from transformers import LlamaForCausalLM, LlamaForTokenClassification, PreTrainedTokenizerFast

    from ponder.prm import load_prm

    tokenizer = PreTrainedTokenizerFast.from_pretrained(policy_dir)
    tokenizer.padding_side = "left"
    policy = LlamaForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    prm_model = LlamaForTokenClassification.from_pretrained(prm_dir, dtype=torch.float32).eval()
    prm_text = load_prm(prm_dir, format="ponder-arith", head="value")  # the PRM's token layout only
    keep = args.beams // args.width
    # The newline is one token of this tokenizer: stopping at it is stopping at the string
    # (transformers' stop_strings cannot parse a character-level vocabulary).
    stop_ids = [tokenizer.convert_tokens_to_ids("\n"), tokenizer.eos_token_id]

    def prm_scores(solutions: list[list[str]]) -> torch.Tensor:
        """Each solution's last step score, from a forward over its whole text."""
        batch = prm_text.pack([QUESTION] * len(solutions), solutions)
        logits = prm_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :, 0]
        at = batch.positions[batch.last_steps()]
        return torch.sigmoid(logits[at[:, 0], at[:, 1]])

    @torch.inference_mode()
    def run():
        torch.manual_seed(0)
        beams: list[list[str]] = [[] for _ in range(args.beams)]
        for _ in range(args.steps):
            texts = [PROMPT.format(question=QUESTION) + "".join(s + "\n" for s in steps) for steps in beams]
            batch = tokenizer(texts, return_tensors="pt", padding=True)
            out = policy.generate(**batch, do_sample=True, top_k=8, temperature=1.0, max_new_tokens=args.step_tokens,
                                  eos_token_id=stop_ids, pad_token_id=0)
            new = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            candidates = [steps + [text.split("\n", 1)[0]] for steps, text in zip(beams, new)]
            scores = prm_scores(candidates)
            best = torch.argsort(scores, descending=True, stable=True)[:keep].tolist()
            beams = [candidates[i] for i in best for _ in range(args.width)]
        return beams

    return run


COLUMNS = [Column("side", "side", 38), Column("wall_s", "wall s", 8, ".2f"), Column("sampling_s", "sampling", 9, ".2f"),
           Column("model_s", "model", 8, ".2f"), Column("prm_s", "PRM", 8, ".2f"), Column("other_s", "other", 8, ".2f"),
           Column("outside", "outside fwd", 12, ".1%"), Column("speedup", "x", 6, ".1f")]


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit("bench_search runs on the CPU only (the transformers side is CPU code here)")
    print(f"models: {MODEL}, float32, {torch.get_num_threads()} threads; beam search N={args.beams}, "
          f"M={args.width}, {args.steps} steps of up to {args.step_tokens} tokens, top-k 8")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory, profiling(args.profile, device):
        policy_dir, prm_dir = make_checkpoints(directory)
        ours, theirs = ponder_search(policy_dir, prm_dir, args), transformers_search(policy_dir, prm_dir, args)
        result = ours()  # warm, and the spend breakdown of one run
        spend = result.spend
        ours_t = measure(ours, device=device, warmup=0, min_reps=args.reps, max_reps=args.reps, min_time_s=0.0,
                         label="ponder beam search" if args.profile else None)
        theirs_t = measure(theirs, device=device, warmup=1, min_reps=args.reps, max_reps=args.reps, min_time_s=0.0,
                           label="transformers beam search" if args.profile else None)
    outside = (spend.wall_s - spend.phase_s["model"] - spend.phase_s["prm"]) / spend.wall_s
    rows = [{"side": "ponder (one run's breakdown)", "wall_s": spend.wall_s, "sampling_s": spend.phase_s["sampling"],
             "model_s": spend.phase_s["model"], "prm_s": spend.phase_s["prm"], "other_s": spend.other_s,
             "outside": outside},
            {"side": "ponder (median)", "wall_s": ours_t.median / 1e3, "speedup": theirs_t.median / ours_t.median},
            {"side": "transformers, search-and-learn style", "wall_s": theirs_t.median / 1e3, "speedup": 1.0}]
    print_table(COLUMNS, rows, title="\nbeam search wall time (s) and ponder's breakdown")
    print(f"ponder spent: {spend.generated_tokens} generated tokens, {spend.policy_forward_tokens} policy forward "
          f"tokens, {spend.prm_tokens} PRM tokens, {spend.generations} generations")
    print(f"\n[{time.perf_counter() - start:.0f} s]")
    speedup = theirs_t.median / ours_t.median
    verdicts = [{"target": f"ponder >= {WALL_TARGET:g}x less wall time than transformers", "value": speedup,
                 "status": "PASS" if speedup >= WALL_TARGET else "FAIL"},
                {"target": f"ponder's wall time outside model forwards < {OUTSIDE_TARGET:.0%}", "value": outside,
                 "status": "PASS" if outside < OUTSIDE_TARGET else "FAIL"}]
    for v in verdicts:
        print(f"{v['status']:>6}  {v['target']}: {v['value']:.3g}")
    path = write_json(args.json, name=NAME, device=device,
                      config={"model": MODEL, "beams": args.beams, "width": args.width, "steps": args.steps,
                              "step_tokens": args.step_tokens, "reps": args.reps, "quick": args.quick},
                      results={"rows": rows, "spend": spend.to_dict(), "ponder": ours_t.to_dict(),
                               "transformers": theirs_t.to_dict()}, targets=verdicts)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
