"""Benchmark ponder's CPU dense layer (``ponder.ops.linear``) against the BLAS.

Run ``python benchmarks/bench_linear.py`` (``--help`` lists the flags). Each timed call
runs x through every projection matrix of a set of decoder layers (fused q/k/v, o,
fused gate/up, down) once, as a model step does, for M rows of x:

* **ponder**: ``ponder.ops.linear(x, W)`` (batch-invariant; weights in nn.Linear layout);
* **blas**: ``torch.nn.functional.linear(x, W)``, which is also the reference (MKL here);
* **mkl packed**: ``torch.ops.mkl._mkl_linear`` with weights packed ahead of time for
  this M by ``_mkl_reorder_linear_weight``, what Inductor's CPU freezing path uses; the
  strongest baseline on an MKL build (``-`` where torch has no MKL).

Shapes: ``tiny`` is the benchmarks' and the built-in task's model shape (hidden 512,
intermediate 1408, 8 query / 4 KV heads of 64) with 8 layers (94 MB of float32, the
policy and PRM of ``bench_search.py`` together: more than a 32 MB L3, so the weights
stream from memory as in a search); ``1b`` is one layer of a 1B-class Llama (hidden
2048, intermediate 8192, 32 / 8 heads of 64; 244 MB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import Column, make_parser, measure, print_table, profiling, setup, write_json

NAME = "linear"
# name -> (hidden, intermediate, q heads, kv heads, head dim, layers)
SHAPES = {"tiny": (512, 1408, 8, 4, 64, 8), "1b": (2048, 8192, 32, 8, 64, 1)}


def parse_args(argv=None):
    parser = make_parser(NAME, "ponder.ops.linear against the BLAS over a model's projection matrices.")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64, 256],
                        help="rows of x (the tokens of a step)")
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.shape = [1, 16], ["tiny"]
    return args


def projection_weights(shape: str, generator: torch.Generator) -> list[torch.Tensor]:
    """The [out, in] weights of every projection of the shape's layers."""
    hidden, inter, heads, kv_heads, head_dim, layers = SHAPES[shape]
    outs_ins = [((heads + 2 * kv_heads) * head_dim, hidden), (hidden, heads * head_dim), (2 * inter, hidden),
                (hidden, inter)]
    return [torch.randn(o, i, generator=generator) * i ** -0.5 for _ in range(layers) for o, i in outs_ins]


def main(argv=None) -> None:
    args = parse_args(argv)
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit("ponder.ops.linear is a CPU op: run on --device cpu")
    import ponder

    has_mkl_packed = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
    generator = torch.Generator().manual_seed(0)
    reps = dict(min_reps=2, max_reps=5, min_time_s=0.05) if args.quick else dict(min_reps=5, min_time_s=0.5)
    rows = []
    with profiling(args.profile, device):
        for shape in args.shape:
            weights = projection_weights(shape, generator)
            megabytes = sum(w.numel() for w in weights) * 4 / 1e6
            for m in args.rows:
                inputs = {w.shape[1]: torch.randn(m, w.shape[1], generator=generator) for w in weights}
                flops = sum(2 * m * w.numel() for w in weights)
                label = (lambda method: f"{method} {shape} M={m}") if args.profile else (lambda method: None)
                ponder_t = measure(lambda: [ponder.ops.linear(inputs[w.shape[1]], w) for w in weights], device=device,
                                   label=label("ponder"), **reps)
                blas_t = measure(lambda: [F.linear(inputs[w.shape[1]], w) for w in weights], device=device,
                                 label=label("blas"), **reps)
                row = dict(shape=shape, mb=megabytes, rows=m, ponder_ms=ponder_t.median, ponder_iqr=ponder_t.iqr,
                           blas_ms=blas_t.median, ponder_gflops=flops / ponder_t.median / 1e6,
                           blas_gflops=flops / blas_t.median / 1e6, blas_over_ponder=blas_t.median / ponder_t.median,
                           timings=dict(ponder=ponder_t.to_dict(), blas=blas_t.to_dict()))
                if has_mkl_packed:
                    packed = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in weights]
                    mkl_t = measure(lambda: [torch.ops.mkl._mkl_linear(inputs[w.shape[1]], p, w, None, m)
                                             for w, p in zip(weights, packed)], device=device,
                                    label=label("mkl packed"), **reps)
                    del packed
                    row |= dict(mkl_ms=mkl_t.median, mkl_over_ponder=mkl_t.median / ponder_t.median)
                    row["timings"]["mkl_packed"] = mkl_t.to_dict()
                rows.append(row)
    columns = [Column("shape", "shape", 5), Column("mb", "MB", 5, ".0f"), Column("rows", "M", 4),
               Column("ponder_ms", "ponder ms", 10, ".2f"), Column("ponder_iqr", "iqr", 6, ".2f"),
               Column("blas_ms", "blas ms", 9, ".2f"), Column("mkl_ms", "mkl packed ms", 14, ".2f"),
               Column("ponder_gflops", "ponder GFLOP/s", 15, ".0f"), Column("blas_gflops", "blas GFLOP/s", 13, ".0f"),
               Column("blas_over_ponder", "blas/ponder", 12, ".2f"), Column("mkl_over_ponder", "mkl/ponder", 11, ".2f")]
    print_table(columns, rows, title=f"ponder.ops.linear vs the BLAS, float32, {torch.get_num_threads()} threads; "
                                     "one call = every projection of the shape's layers; medians")
    path = write_json(args.json, name=NAME, device=device,
                      config=dict(rows=args.rows, shapes={s: SHAPES[s] for s in args.shape}), results=rows)
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
