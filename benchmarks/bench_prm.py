"""Benchmark incremental PRM scoring on a forked KV tree against re-scoring full prefixes.

Run ``python benchmarks/bench_prm.py`` (``--help`` lists the flags). The shape is a beam
search against a PRM, as the compute-optimal scaling paper runs it: 16 beams, beam width
4, 40 steps of about 30 tokens each, after a question of about 100 tokens. Each step
every live beam gets a new step, all 16 are scored, the best 4 are kept (here: a seeded
random choice, so that every method scores the same tree) and each is forked into 4
beams for the next step.

The PRM is a small Llama-shaped value-head model (4 layers, hidden 512, 8 query heads, 4
KV heads, a one-logit ``score`` head; the built-in task's character tokenizer, so one
character is one token), saved as a transformers ``LlamaForTokenClassification``
checkpoint and loaded by both sides. Three methods score the same tree:

incremental
    ponder's :class:`~ponder.prm.IncrementalScorer`: the question is prefilled once; each
    step forks the kept beams and extends the 16 new ones by their step's tokens only,
    in one batched forward on the paged KV cache.
re-score (transformers)
    what search-and-learn does: every step, the 16 beams' whole texts (question and all
    steps so far) go through the PRM in one padded batch, here transformers' own
    forward of the same checkpoint, and the score of the newest step is read.
re-score (ponder dense)
    the same re-scoring with ponder's dense forward (:meth:`PRM.score`), to separate the
    gain of incremental scoring from the speed of the forward itself.

Reported: PRM tokens processed (tokens through the forward; padding not counted) and
wall time of the whole 40-step search, and their ratios against the faster re-scoring
method. The incremental search is timed ``--reps`` times (median); a re-scoring run
takes minutes and is timed once. Targets (from the issue): at least 5x fewer tokens and at least 3x less wall
time. Each method's scores of the newest steps are checked against the incremental ones.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time

import torch

from common import Column, make_parser, measure, print_table, profiling, setup, write_json

NAME = "prm"
MODEL = dict(num_hidden_layers=4, hidden_size=512, intermediate_size=1408, num_attention_heads=8,
             num_key_value_heads=4, max_position_embeddings=4096)
TOKEN_TARGET, WALL_TARGET = 5.0, 3.0
STEP_CHARACTERS = "0123456789 +-*=()"


def parse_args(argv=None):
    parser = make_parser(NAME, "Incremental PRM scoring on a forked KV tree vs re-scoring whole prefixes.")
    parser.add_argument("--steps", type=int, default=40, help="search steps (default: %(default)s)")
    parser.add_argument("--beams", type=int, default=16, help="beams (default: %(default)s)")
    parser.add_argument("--width", type=int, default=4, help="beam width: children per kept beam (default: %(default)s)")
    parser.add_argument("--step-tokens", type=int, default=30,
                        help="tokens a step adds to the PRM sequence, tag and newline included (default: %(default)s)")
    parser.add_argument("--question-tokens", type=int, default=100, help="question length (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=3,
                        help="timed runs of the incremental method (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.beams, args.width, args.step_tokens, args.question_tokens, args.reps = 4, 4, 2, 12, 20, 1
    if args.beams % args.width:
        parser.error(f"--beams ({args.beams}) must be a multiple of --width ({args.width})")
    return args


def make_prm_checkpoint(directory: str) -> None:
    """A random LlamaForTokenClassification (one label) with the task tokenizer, saved to ``directory``."""
    from transformers import LlamaConfig, LlamaForTokenClassification

    from ponder.tasks import tokenizer as task_tokenizer

    vocab = task_tokenizer.build_tokenizer().get_vocab_size()
    torch.manual_seed(0)
    config = LlamaConfig(**MODEL, vocab_size=vocab, num_labels=1, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForTokenClassification(config)
    with torch.no_grad():  # unit-scale weights: transformers' std 0.02 would give every step the same score
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 1.0 if "embed" in name else param.shape[1] ** -0.5)
    model.save_pretrained(directory)
    task_tokenizer.save(directory)


def plan_search(args) -> tuple[str, list[list[str]], list[list[int]]]:
    """The seeded tree every method scores: the question, each step's texts, the beams kept after each step.

    ``steps[h][b]`` is beam b's new step at step h; ``kept[h]`` the indices of the beams
    whose children make the beams of step h + 1 (``width`` children each, in order).
    """
    rng = random.Random(0)
    text = lambda n: "".join(rng.choice(STEP_CHARACTERS) for _ in range(n))  # noqa: E731
    question = text(args.question_tokens - len("Q: \nA:\n") - 1)  # minus the template and <bos>
    keep = args.beams // args.width
    steps = [[text(args.step_tokens - 2) for _ in range(args.beams)] for _ in range(args.steps)]  # minus tag, "\n"
    kept = [sorted(rng.sample(range(args.beams), keep)) for _ in range(args.steps)]
    return question, steps, kept


def histories(question_steps: list[list[str]], kept: list[list[int]], width: int) -> list[list[list[str]]]:
    """Each step's beams as whole step lists: ``out[h][b]`` = the steps of beam b after step h."""
    beams = [[] for _ in question_steps[0]]
    out = []
    for h, new in enumerate(question_steps):
        beams = [history + [step] for history, step in zip(beams, new)]
        out.append(beams)
        beams = [beams[k] for k in kept[h] for _ in range(width)]
    return out


def run_incremental(prm, question, steps, kept, width) -> tuple[list[torch.Tensor], int]:
    """The search on an IncrementalScorer: (the newest steps' scores after each step, PRM tokens)."""
    total = len(prm.encode_prompt(question)) + sum(len(prm.encode_step(s).ids) for row in steps for s in row)
    scorer = prm.scorer(max_tokens=4 * total, block_size=16)
    (root,), _ = scorer.start([question])
    beams = scorer.fork(root, len(steps[0]))
    scorer.free(root)
    scores = []
    for h, new in enumerate(steps):
        scores.append(scorer.extend(beams, new).scores)
        parents = [beams[k] for k in kept[h]]
        for beam in beams:
            if beam not in parents:
                scorer.free(beam)
        beams = [child for parent in parents for child in scorer.fork(parent, width)]
        for parent in parents:
            scorer.free(parent)
    return scores, scorer.tokens_processed


def run_rescore_ponder(prm, question, trees) -> tuple[list[torch.Tensor], int]:
    scores, tokens = [], 0
    prompt = len(prm.encode_prompt(question))
    for beams in trees:
        per_step, _ = prm.score([question] * len(beams), beams)
        scores.append(torch.stack([s[-1] for s in per_step]))
        tokens += sum(prompt + sum(len(prm.encode_step(s).ids) for s in beam) for beam in beams)
    return scores, tokens


def run_rescore_transformers(hf, prm, question, trees) -> tuple[list[torch.Tensor], int]:
    scores, tokens = [], 0
    for beams in trees:
        batch = prm.pack([question] * len(beams), beams)
        with torch.inference_mode():
            logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :, 0]
        at = batch.positions[batch.last_steps()]
        scores.append(torch.sigmoid(logits[at[:, 0], at[:, 1]]).float())
        tokens += int(batch.attention_mask.sum())
    return scores, tokens


COLUMNS = [Column("method", "method", 26), Column("tokens", "PRM tokens", 11), Column("wall_s", "wall s", 8, ".2f"),
           Column("token_ratio", "tokens x", 9, ".1f"), Column("wall_ratio", "wall x", 8, ".1f"),
           Column("max_diff", "max |score diff|", 17, ".1e")]


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    from transformers import LlamaForTokenClassification

    from ponder.prm import load_prm

    question, steps, kept = plan_search(args)
    trees = histories(steps, kept, args.width)
    print(f"PRM: {MODEL}, value head, float32, {torch.get_num_threads()} threads; search: {args.beams} beams, "
          f"width {args.width}, {args.steps} steps of {args.step_tokens} tokens, question {args.question_tokens}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory, profiling(args.profile, device):
        make_prm_checkpoint(directory)
        prm = load_prm(directory, format="ponder-arith", head="value", device=device)
        hf = LlamaForTokenClassification.from_pretrained(directory, dtype=torch.float32).to(device).eval()
        methods = {
            "incremental (ponder)": lambda: run_incremental(prm, question, steps, kept, args.width),
            "re-score (transformers)": lambda: run_rescore_transformers(hf, prm, question, trees),
            "re-score (ponder dense)": lambda: run_rescore_ponder(prm, question, trees),
        }
        rows, reference = [], None
        for name, method in methods.items():
            start_method = time.perf_counter()
            scores, tokens = method()
            first_s = time.perf_counter() - start_method
            flat = torch.cat(scores).cpu()
            reference = flat if reference is None else reference
            row = {"method": name, "tokens": tokens, "wall_s": first_s, "reps": 1,
                   "max_diff": float((flat - reference).abs().max())}
            if name.startswith("incremental"):  # seconds a run: repeat it; a re-scoring run takes minutes
                timing = measure(method, device=device, warmup=0, min_reps=args.reps, max_reps=args.reps,
                                 min_time_s=0.0, label=name if args.profile else None)
                row.update(wall_s=timing.median / 1e3, wall_iqr_s=timing.iqr / 1e3, reps=timing.reps)
            rows.append(row)
            print(f"  {name}: {row['wall_s']:.2f} s", file=sys.stderr)
    fastest_rescore = min((r for r in rows if r["method"].startswith("re-score")), key=lambda r: r["wall_s"])
    for row in rows:
        row["token_ratio"] = fastest_rescore["tokens"] / row["tokens"]
        row["wall_ratio"] = fastest_rescore["wall_s"] / row["wall_s"]
    print_table(COLUMNS, rows, title=f"\n{args.steps}-step, {args.beams}-beam search: PRM work per method "
                                     f"(ratios: the faster re-scoring / this method)")
    print(f"\n[{time.perf_counter() - start:.0f} s]")
    incremental = rows[0]
    verdicts = [
        {"target": f"incremental processes >= {TOKEN_TARGET:g}x fewer PRM tokens than re-scoring",
         "value": incremental["token_ratio"], "status": "PASS" if incremental["token_ratio"] >= TOKEN_TARGET else "FAIL"},
        {"target": f"incremental takes >= {WALL_TARGET:g}x less wall time than the faster re-scoring",
         "value": incremental["wall_ratio"], "status": "PASS" if incremental["wall_ratio"] >= WALL_TARGET else "FAIL"},
        {"target": "every method gives the same scores (max |diff| <= 1e-4)", "value": max(r["max_diff"] for r in rows),
         "status": "PASS" if max(r["max_diff"] for r in rows) <= 1e-4 else "FAIL"},
    ]
    for v in verdicts:
        print(f"{v['status']:>6}  {v['target']}: {v['value']:.3g}")
    path = write_json(args.json, name=NAME, device=device,
                      config={"model": MODEL, "steps": args.steps, "beams": args.beams, "width": args.width,
                              "step_tokens": args.step_tokens, "question_tokens": args.question_tokens,
                              "reps": args.reps, "quick": args.quick},
                      results=rows, targets=verdicts)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
