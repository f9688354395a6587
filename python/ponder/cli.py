"""The ``ponder`` command line.

* ``ponder demo``: every search method at generation budgets 1, 4, 16, 64 on held-out
  problems of the built-in task, with the shipped policy and PRM (see
  :mod:`ponder.experiments.demo`): a table, a plot, a JSON file and a tree picture.
* ``ponder sampling``: the sampling primitive at work: what each filter does to a small
  next-token distribution, that draws follow the filtered distribution, and how fast a
  batch of LLM-sized rows is sampled next to the reference and a streaming read.
* ``ponder study``: the compute-optimal scaling study in small (see
  :mod:`ponder.experiments.study`): difficulty bins, accuracy per bin and budget,
  compute-optimal selection, PAV against PRM, the paper's findings checked.
* ``ponder train policy|prm|revision``: train the built-in task's tiny models (see :mod:`ponder.train`).
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


def _sampling(args: argparse.Namespace) -> None:
    _show_filters(args.draws, args.seed)
    _show_speed(args.batch, args.vocab, args.seed)


def _demo(args: argparse.Namespace) -> None:
    from ponder.experiments.demo import DemoConfig, run_demo

    run_demo(DemoConfig(methods=tuple(args.methods), budgets=tuple(args.budgets), problems=args.problems,
                        seed=args.seed, temperature=args.temperature, policy=args.policy, prm=args.prm,
                        out=args.out))


def _study(args: argparse.Namespace) -> None:
    from ponder.experiments.study import StudyConfig, run_study

    run_study(StudyConfig(problems=args.problems, budgets=tuple(args.budgets), strategies=tuple(args.strategies),
                          pav_alpha=args.pav_alpha, seed=args.seed, resamples=args.resamples, policy=args.policy,
                          prm=args.prm, prover=args.prover, revision=args.revision, out=args.out,
                          resume=args.resume, rollouts=args.rollouts))


def _train_policy(args: argparse.Namespace) -> None:
    from ponder.train import PolicyTrainConfig, save_policy, train_policy

    config = PolicyTrainConfig(steps=args.steps, minutes=args.minutes, lr=args.lr, train_problems=args.train_problems,
                               seed=args.seed)
    model, losses = train_policy(config, log=print, init=args.init)
    path = save_policy(model, args.out, config)
    print(f"trained {len(losses)} steps (final loss {losses[-1]:.4f}); checkpoint in {path}")


def _train_prm(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ponder.models import load_model
    from ponder.tasks import split
    from ponder.tasks import tokenizer as task_tokenizer
    from ponder.train import prm as prm_training
    from ponder.train.policy import load_task_lm

    rollouts = prm_training.RolloutConfig(problems=args.problems, samples=args.samples, rollouts=args.rollouts,
                                          seed=args.seed)
    if args.labels and Path(args.labels).is_file():
        labeled = prm_training.load_labels(args.labels)
        print(f"read {len(labeled)} labelled solutions from {args.labels}")
    else:
        policy = load_model(args.policy)
        labeled = prm_training.rollout_labels(policy, task_tokenizer.build_tokenizer(),
                                              split("train", rollouts.problems), rollouts, log=print)
        if args.labels:
            prm_training.save_labels(labeled, args.labels)
    if args.prover_policy:
        labeled = prm_training.prover_rollout_labels(load_task_lm(args.prover_policy), task_tokenizer.build_tokenizer(),
                                                     labeled, split("train", rollouts.problems), rollouts, log=print)
    config = prm_training.PRMTrainConfig(best_of=args.prover_best_of, epochs=args.epochs, minutes=args.minutes,
                                         seed=args.seed)
    prm, losses = prm_training.train_prm(args.init or args.policy, labeled, config, log=print)
    path = prm_training.save_prm(prm, args.out, config, rollouts,
                                 prover_policy=Path(args.prover_policy).name if args.prover_policy else None)
    print(f"trained {len(losses)} steps (final bce {losses[-1]:.4f}); checkpoint in {path}")


def _train_revision(args: argparse.Namespace) -> None:
    from ponder.models import load_model
    from ponder.tasks import split
    from ponder.tasks import tokenizer as task_tokenizer
    from ponder.train import revision

    data = revision.RevisionDataConfig(problems=args.problems, samples=args.samples, seed=args.seed)
    problems = split("train", data.problems)
    attempts = revision.sample_attempts(load_model(args.policy), task_tokenizer.build_tokenizer(), problems, data,
                                        log=print)
    trajectories = revision.revision_trajectories(problems, attempts, data.targets_per_problem, seed=args.seed)
    print(f"{len(trajectories)} trajectories, {sum(len(t.previous) for t in trajectories)} wrong attempts in context")
    config = revision.RevisionTrainConfig(steps=args.steps, minutes=args.minutes, seed=args.seed)
    model, losses = revision.train_revision(args.policy, trajectories, config, log=print)
    path = revision.save_revision(model, args.out, config, data)
    print(f"trained {len(losses)} steps (final loss {losses[-1]:.4f}); checkpoint in {path}")


def main(argv: list[str] | None = None) -> None:
    from ponder.train.policy import PolicyTrainConfig
    from ponder.train.prm import PRMTrainConfig, RolloutConfig
    from ponder.train.revision import RevisionDataConfig, RevisionTrainConfig

    parser = argparse.ArgumentParser(prog="ponder", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    from ponder.experiments.demo import DemoConfig
    from ponder.experiments.methods import METHODS

    demo = commands.add_parser("demo", help="search methods at several budgets on the built-in task (no download)")
    demo.add_argument("--methods", nargs="+", choices=METHODS, default=list(DemoConfig.methods), metavar="METHOD",
                      help=f"methods to run (default all: {' '.join(METHODS)})")
    demo.add_argument("--budgets", nargs="+", type=int, default=list(DemoConfig.budgets), metavar="N",
                      help="generation budgets (default 1 4 16 64)")
    demo.add_argument("--problems", type=int, default=DemoConfig.problems,
                      help=f"held-out problems, an equal mix of levels (default {DemoConfig.problems})")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--temperature", type=float, default=DemoConfig.temperature, help="policy sampling temperature")
    demo.add_argument("--policy", default=None, help="policy checkpoint directory (default: the built-in one)")
    demo.add_argument("--prm", default=None, help="PRM checkpoint directory as `ponder train prm` writes it "
                      "(ponder-arith format, surprisal value head; default: built-in)")
    demo.add_argument("--out", default=DemoConfig.out, help="where results.json, accuracy.png and tree.png go "
                                                             f"(default ./{DemoConfig.out})")
    demo.set_defaults(run=_demo)
    from ponder.experiments.study import STRATEGIES, StudyConfig

    study = commands.add_parser("study", help="the compute-optimal scaling study on the built-in task (longer)")
    study.add_argument("--problems", type=int, default=StudyConfig.problems,
                       help=f"validation problems (default {StudyConfig.problems})")
    study.add_argument("--budgets", nargs="+", type=int, default=list(StudyConfig.budgets), metavar="N",
                       help="generation budgets (default 1 4 16 64)")
    study.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES),
                       metavar="STRATEGY", help=f"strategies (default all: {' '.join(STRATEGIES)})")
    study.add_argument("--pav-alpha", type=float, default=StudyConfig.pav_alpha, help="PAV's advantage weight")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--resamples", type=int, default=StudyConfig.resamples, metavar="R",
                       help="bootstrap resamples of the problems behind each finding's support (0: none)")
    study.add_argument("--policy", default=None, help="policy checkpoint directory (default: built-in)")
    study.add_argument("--prm", default=None, help="PRM checkpoint directory (default: built-in)")
    study.add_argument("--prover", default=None, help="prover PRM checkpoint directory (default: built-in)")
    study.add_argument("--revision", default=None, help="revision model checkpoint directory (default: built-in)")
    study.add_argument("--out", default=StudyConfig.out, help=f"output directory (default ./{StudyConfig.out})")
    study.add_argument("--rollouts", type=int, default=None, metavar="K",
                       help="search against the policy's Monte-Carlo values over K roll-outs of each scored step "
                            "instead of the PRM and the prover (what they approximate; slow)")
    study.add_argument("--resume", action="store_true",
                       help="reuse the runs a stopped or smaller study with the same settings and checkpoints "
                            "finished in --out (OUT/runs)")
    study.set_defaults(run=_study)
    sampling = commands.add_parser("sampling", help="show fused sampling at work")
    sampling.add_argument("--batch", type=int, default=64, help="rows in the speed run (default 64)")
    sampling.add_argument("--vocab", type=int, default=128256, help="vocab size in the speed run (default 128256)")
    sampling.add_argument("--draws", type=int, default=20000, help="draws per setting on the toy distribution")
    sampling.add_argument("--seed", type=int, default=0)
    sampling.set_defaults(run=_sampling)
    train = commands.add_parser("train", help="train the built-in task's tiny models on CPU")
    models = train.add_subparsers(dest="model", required=True)
    policy = models.add_parser("policy", help="the policy, on the task's varied correct solutions")
    policy.add_argument("--out", required=True, help="checkpoint directory to write")
    policy.add_argument("--steps", type=int, default=PolicyTrainConfig.steps,
                        help=f"optimizer steps (default {PolicyTrainConfig.steps})")
    policy.add_argument("--minutes", type=float, default=PolicyTrainConfig.minutes,
                        help=f"wall-time limit, a safety stop (default {PolicyTrainConfig.minutes:g})")
    policy.add_argument("--lr", type=float, default=PolicyTrainConfig.lr,
                        help=f"peak learning rate (default {PolicyTrainConfig.lr:g})")
    policy.add_argument("--init", default=None, help="a checkpoint directory to train on from (default: "
                                                     "from scratch, in the shape of the built-in policy)")
    policy.add_argument("--train-problems", type=int, default=None,
                        help="train on the first N problems of the training split (default: all)")
    policy.add_argument("--seed", type=int, default=0)
    policy.set_defaults(run=_train_policy)
    prm = models.add_parser("prm", help="a PRM on Monte-Carlo roll-out values of a trained policy")
    prm.add_argument("--policy", required=True, help="the policy checkpoint directory (rolled out, and by default "
                                                     "the PRM's starting weights)")
    prm.add_argument("--init", default=None, help="the PRM's starting weights, an LM of the policy's tokenizer "
                                                  "(default: the policy; see `ponder train policy --init`)")
    prm.add_argument("--out", required=True, help="checkpoint directory to write")
    prm.add_argument("--labels", default=None, help="JSONL of roll-out labels: read if it exists, else written "
                                                    "(so a prover PRM can reuse the policy PRM's roll-outs)")
    prm.add_argument("--prover-best-of", type=int, default=1,
                     help="label by the value of a best-of-K prover of the policy, or of --prover-policy "
                          "(default 1: the roll-out policy's own value)")
    prm.add_argument("--prover-policy", default=None,
                     help="label by roll-outs of this distinct prover policy (a checkpoint directory) from the "
                          "policy's solutions, for a PAV's prover (default: the policy's own roll-outs)")
    prm.add_argument("--problems", type=int, default=RolloutConfig.problems,
                     help="training problems to label")
    prm.add_argument("--samples", type=int, default=RolloutConfig.samples,
                     help="solutions sampled per problem")
    prm.add_argument("--rollouts", type=int, default=RolloutConfig.rollouts,
                     help="completions sampled after each step")
    prm.add_argument("--epochs", type=int, default=PRMTrainConfig.epochs)
    prm.add_argument("--minutes", type=float, default=PRMTrainConfig.minutes,
                     help=f"training wall-time limit (default {PRMTrainConfig.minutes:g})")
    prm.add_argument("--seed", type=int, default=0)
    prm.set_defaults(run=_train_prm)
    revise = models.add_parser("revision", help="a revision model: the policy fine-tuned to answer again after "
                                                "wrong attempts")
    revise.add_argument("--policy", required=True, help="the policy checkpoint directory (sampled, and the "
                                                        "revision model's starting weights)")
    revise.add_argument("--out", required=True, help="checkpoint directory to write")
    revise.add_argument("--problems", type=int, default=RevisionDataConfig.problems, help="training problems sampled")
    revise.add_argument("--samples", type=int, default=RevisionDataConfig.samples,
                        help="solutions sampled per problem")
    revise.add_argument("--steps", type=int, default=RevisionTrainConfig.steps,
                        help=f"optimizer steps (default {RevisionTrainConfig.steps})")
    revise.add_argument("--minutes", type=float, default=RevisionTrainConfig.minutes,
                        help=f"training wall-time limit (default {RevisionTrainConfig.minutes:g})")
    revise.add_argument("--seed", type=int, default=0)
    revise.set_defaults(run=_train_revision)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
