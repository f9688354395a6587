"""The ``ponder`` command line.

``ponder train policy --out DIR`` trains the built-in task's tiny policy (see
:mod:`ponder.train`). ``ponder demo`` shows the sampling primitive at work: what each filter does to a small
next-token distribution, that draws follow the filtered distribution, and how fast a
batch of LLM-sized rows is sampled next to the reference implementation and a plain
streaming read of the logits.
"""

from __future__ import annotations

import argparse
import time

import torch

import ponder
from ponder.synthetic import llm_like_logits

# A toy next-token distribution: the continuations of "The answer is".
TOY_WORDS = ["4", "four", "5", "3", "2+2", "unknown", "the", "a", "42", "IV", "quatre", "vier"]
TOY_LOGITS = [6.0, 4.6, 3.1, 2.8, 2.5, 1.2, 0.9, 0.8, 0.4, 0.1, -0.5, -0.8]

SETTINGS = [
    ("softmax", dict()),
    ("temperature 0.6", dict(temperature=0.6)),
    ("top-k 3", dict(top_k=3)),
    ("top-p 0.95", dict(top_p=0.95)),
    ("min-p 0.02", dict(min_p=0.02)),
    ("T 1.5, top-k 6, top-p 0.95", dict(temperature=1.5, top_k=6, top_p=0.95)),
    ("greedy", dict(temperature=0.0)),
]


def _show_filters(draws: int, seed: int) -> None:
    logits = torch.tensor([TOY_LOGITS])
    print(f"Filters on a toy next-token distribution ({draws} draws each; prob / observed frequency)\n")
    header = f"{'setting':<28}" + "".join(f"{w:>12}" for w in TOY_WORDS[:7])
    print(header)
    for name, params in SETTINGS:
        probs = ponder.filtered_probs(logits, **params)[0]
        tokens = ponder.sample(logits, **params, seed=seed, num_samples=draws).tokens[0]
        freq = torch.bincount(tokens, minlength=len(TOY_WORDS)).float() / draws
        cells = "".join(f"{p:>6.3f}/{f:<5.3f}" if p > 0 else f"{'-':>12}" for p, f in zip(probs[:7], freq[:7]))
        print(f"{name:<28}{cells}")
    print()


def _time_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _show_speed(batch: int, vocab: int, seed: int) -> None:
    logits = llm_like_logits(batch, vocab, seed)
    params = dict(temperature=0.7, top_k=50, top_p=0.95)
    floor = _time_ms(lambda: torch.amax(logits, dim=-1), 10)
    fast = _time_ms(lambda: ponder.sample(logits, **params, seed=seed), 10)
    slow = _time_ms(lambda: ponder.sample(logits, **params, seed=seed, backend="reference"), 2)
    same = torch.equal(ponder.sample(logits, **params, seed=seed).tokens,
                       ponder.sample(logits, **params, seed=seed, backend="reference").tokens)
    print(f"Sampling {batch} rows x {vocab} vocab (float32, T=0.7, top-k 50, top-p 0.95), "
          f"{torch.get_num_threads()} threads, best of repeats")
    backend = ponder.ops._backend.resolve_backend(None, logits.device)
    print(f"  {'ponder (' + backend + ' backend)':<32} {fast:9.2f} ms")
    print(f"  {'reference (sort-based PyTorch)':<32} {slow:9.2f} ms   {slow / fast:6.1f}x slower")
    print(f"  {'streaming read (torch.amax)':<32} {floor:9.2f} ms   ponder is {fast / floor:.1f}x the memory floor")
    print(f"  same tokens as the reference under one seed: {same}")


def _demo(args: argparse.Namespace) -> None:
    _show_filters(args.draws, args.seed)
    _show_speed(args.batch, args.vocab, args.seed)


def _train_policy(args: argparse.Namespace) -> None:
    from ponder.train import PolicyTrainConfig, save_policy, train_policy

    config = PolicyTrainConfig(steps=args.steps, minutes=args.minutes, train_problems=args.train_problems,
                               seed=args.seed)
    model, losses = train_policy(config, log=print)
    path = save_policy(model, args.out, config)
    print(f"trained {len(losses)} steps (final loss {losses[-1]:.4f}); checkpoint in {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ponder", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="show fused sampling at work (no download)")
    demo.add_argument("--batch", type=int, default=64, help="rows in the speed run (default 64)")
    demo.add_argument("--vocab", type=int, default=128256, help="vocab size in the speed run (default 128256)")
    demo.add_argument("--draws", type=int, default=20000, help="draws per setting on the toy distribution")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    train = commands.add_parser("train", help="train the built-in task's tiny models on CPU")
    models = train.add_subparsers(dest="model", required=True)
    policy = models.add_parser("policy", help="the policy, on the task's varied correct solutions")
    policy.add_argument("--out", required=True, help="checkpoint directory to write")
    policy.add_argument("--steps", type=int, default=4000, help="optimizer steps at most (default 4000)")
    policy.add_argument("--minutes", type=float, default=15.0, help="wall-time limit (default 15)")
    policy.add_argument("--train-problems", type=int, default=None,
                        help="train on the first N problems of the training split (default: all)")
    policy.add_argument("--seed", type=int, default=0)
    policy.set_defaults(run=_train_policy)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
