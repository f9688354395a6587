"""Benchmark ponder's sequential revisions against a loop that re-sends every chain's prompt to transformers.

Run ``python benchmarks/bench_revisions.py`` (``--help`` lists the flags). Both sides
run the built-in revision model (``ponder/checkpoints/revision``) on the first
``--problems`` validation problems of the built-in task: ``--chains`` chains of
``--length`` attempts each, every attempt a whole solution sampled at temperature 1,
the prompt of each attempt the question with the chain's last four attempts before it
(:func:`ponder.search.revisions.default_revision_prompt` in the task's template). Attempts are
judged by the task's checker on both sides, so the timings are the revision model's
work alone (no PRM).

ponder
    :func:`ponder.search.revisions` with the task's :class:`~ponder.search.ModelPolicy`:
    one paged KV cache for every chain, the prompts' shared leading blocks taken from its
    prefix cache, a prompt shared by several chains (every chain's first one) computed
    once and forked, all chains' attempts decoded in one batched step per token.
transformers (the usual loop)
    each round, every chain's whole prompt is encoded and ``generate`` samples its next
    attempt in one left-padded batch, up to end-of-sequence; nothing carries over
    between rounds, as when a pipeline sends each round's prompts to a server without a
    prefix cache.

Reported: wall time of each side and the ratio, each side's right attempts (a sanity
check: the same model, so about the same share), and the tokens each side's model ran
over.
"""

from __future__ import annotations

import sys
import time

import torch

from common import Column, make_parser, measure, print_table, profiling, setup, write_json

NAME = "revisions"
MAX_NEW_TOKENS = 160  # a solution of the task is at most about 100 tokens; the revision model stops itself
MAX_CONTEXT = 4       # earlier attempts in a prompt, as revisions' default


def parse_args(argv=None):
    parser = make_parser(NAME, "Sequential revisions end to end: ponder vs a transformers loop over whole prompts.")
    parser.add_argument("--problems", type=int, default=32, help="validation problems (default: %(default)s)")
    parser.add_argument("--chains", type=int, default=4, help="chains per problem (default: %(default)s)")
    parser.add_argument("--length", type=int, default=4, help="attempts per chain (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each side (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.chains, args.length, args.reps = 4, 2, 2, 1
    return args


def ponder_revisions(problems, args):
    """A callable running ponder's revisions once, with a fresh cache; returns the SearchResult."""
    import ponder
    from ponder.builtin import checkpoint, task_answer, task_checker, task_policy
    from ponder.models import load_tokenizer
    from ponder.search import CheckerVerifier, revisions

    model = ponder.load_model(checkpoint("revision"))
    tokenizer = load_tokenizer(checkpoint("revision"))
    capacity = len(problems) * args.chains * (MAX_CONTEXT + 2) * 2 * MAX_NEW_TOKENS

    def run():
        policy = task_policy(model, tokenizer, cache_tokens=capacity)
        return revisions(policy, CheckerVerifier(task_checker(problems)), [p.prompt for p in problems],
                         answer_of=task_answer, chains=args.chains, length=args.length, max_context=MAX_CONTEXT,
                         seed=0, progress=False)

    return run


def transformers_revisions(problems, args):
    """A callable running the same revisions with transformers; returns (right attempts, tokens run over)."""
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from ponder.builtin import checkpoint
    from ponder.search.revisions import default_revision_prompt
    from ponder.tasks import ArithmeticTask

    task = ArithmeticTask()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoint("revision"))
    tokenizer.padding_side = "left"
    model = LlamaForCausalLM.from_pretrained(checkpoint("revision"), dtype=torch.float32).eval()
    eos = tokenizer.convert_tokens_to_ids("<eos>")
    chains = [problem for problem in problems for _ in range(args.chains)]

    @torch.inference_mode()
    def run():
        torch.manual_seed(0)
        history: list[list[str]] = [[] for _ in chains]
        right = tokens = 0
        for _ in range(args.length):
            texts = [task.prompt_template.format(question=default_revision_prompt(p.prompt, h[-MAX_CONTEXT:]))
                     for p, h in zip(chains, history)]
            batch = tokenizer(texts, return_tensors="pt", padding=True)
            out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=MAX_NEW_TOKENS,
                                 eos_token_id=eos, pad_token_id=0)
            new = out[:, batch["input_ids"].shape[1]:]
            tokens += int(batch["attention_mask"].sum()) + int((new != 0).sum())
            for p, h, text in zip(chains, history, tokenizer.batch_decode(new, skip_special_tokens=True)):
                attempt = text.strip("\n")
                h.append(attempt)
                right += task.is_correct(p, attempt)
        return right, tokens

    return run


COLUMNS = [Column("side", "side", 38), Column("wall_s", "wall s", 8, ".2f"), Column("right", "right", 8, ".3f"),
           Column("tokens", "tokens run", 11, "d"), Column("speedup", "x", 6, ".1f")]


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit("bench_revisions runs on the CPU only (the transformers side is CPU code here)")
    from ponder.tasks import split

    problems = split("validation", args.problems)
    attempts = args.problems * args.chains * args.length
    print(f"built-in revision model, float32, {torch.get_num_threads()} threads; {args.problems} problems, "
          f"{args.chains} chains of {args.length} attempts ({attempts} attempts), temperature 1")
    start = time.perf_counter()
    with profiling(args.profile, device):
        ours, theirs = ponder_revisions(problems, args), transformers_revisions(problems, args)
        result = ours()  # warm, and the spend and answers of one run
        their_right, their_tokens = theirs()
        ours_t = measure(ours, device=device, warmup=0, min_reps=args.reps, max_reps=args.reps, min_time_s=0.0,
                         label="ponder revisions" if args.profile else None)
        theirs_t = measure(theirs, device=device, warmup=0, min_reps=args.reps, max_reps=args.reps, min_time_s=0.0,
                           label="transformers revisions" if args.profile else None)
    spend = result.spend
    our_right = sum(p.answer == c.answer for p, r in zip(problems, result.results) for c in r.candidates)
    speedup = theirs_t.median / ours_t.median
    rows = [{"side": "ponder", "wall_s": ours_t.median / 1e3, "right": our_right / attempts,
             "tokens": spend.policy_forward_tokens, "speedup": speedup},
            {"side": "transformers, whole prompts each round", "wall_s": theirs_t.median / 1e3,
             "right": their_right / attempts, "tokens": their_tokens, "speedup": 1.0}]
    print_table(COLUMNS, rows, title="\nsequential revisions: median wall time (s), share of right attempts, "
                                     "tokens the model ran over")
    print(f"ponder spent: {spend.generated_tokens} generated tokens, {spend.policy_forward_tokens} policy forward "
          f"tokens, {spend.generations} generations")
    print(f"\n[{time.perf_counter() - start:.0f} s]")
    path = write_json(args.json, name=NAME, device=device,
                      config={"problems": args.problems, "chains": args.chains, "length": args.length,
                              "max_context": MAX_CONTEXT, "reps": args.reps, "quick": args.quick},
                      results={"rows": rows, "spend": spend.to_dict(), "ponder": ours_t.to_dict(),
                               "transformers": theirs_t.to_dict()})
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
