"""Benchmark: predict's time per problem by batch size, on this CPU, in every precision it offers.

    python benchmarks/batch_curve.py [--sizes small medium] [--quick]

For each model size (double integrator, weights drawn at random: the time does not depend on
them) and each precision predict offers here (float32; float16 weights; bfloat16 only where the
CPU has bfloat16 units, AVX512_BF16 or AMX), the median time per problem of predict at batches
1, 8, 16, 17, 32, 64, 256, 1,000 and 10,000, next to the two paths it chooses between, forward.c
alone and PyTorch alone (float32), so that the route and its cost can be read off one table.

The bars, checked on the curve measured here (nothing is asserted):
- no cliff: at no batch does predict cost more than 1.25x per problem the best smaller batch;
- batch 10,000 costs at most 0.5x batch 1 per problem;
- the medium model at batch 10,000 runs at 50% or more of the float32 matrix-product rate
  measured in the same run (a net-sized product, [10000, 208] x [208, 832]);
- bfloat16 at least 1.5x float32 at batch 10,000, where the CPU has bfloat16 units.
Writes docs/results/batch_curve.md (with `trc info`'s description of the paths).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trc_lib import TinyRecursiveControl
from trc_lib.fast import forward as fast_forward
from trc_lib.fast.c_library import bfloat16_units
from trc_lib.tasks import make_problem

from results_page import write_page

BATCHES = (1, 8, 16, 17, 32, 64, 256, 1000, 10000)
CLIFF, LARGE_OVER_ONE, MATMUL_SHARE, BFLOAT16_GAIN = 1.25, 0.5, 0.5, 1.5


def per_problem_us(predict, batch: int, rng, seconds: float, rounds: int = 3) -> float:
    """Microseconds per problem of predict on `batch` random problems: two warm-up calls, then
    `rounds` rounds of as many calls as fit in about seconds / rounds (at least three), the
    smallest of the rounds' medians (a shared machine's other work only ever adds time)."""
    x0, xt = rng.uniform(-1, 1, (batch, 2)), rng.uniform(-0.5, 0.5, (batch, 2))
    started = time.perf_counter()
    predict(x0, xt)
    predict(x0, xt)
    one = (time.perf_counter() - started) / 2
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(max(3, min(300, int(seconds / rounds / max(one, 1e-6))))):
            started = time.perf_counter()
            predict(x0, xt)
            times.append(time.perf_counter() - started)
        medians.append(float(np.median(times)))
    return 1e6 * min(medians) / batch


def c_only(predict):
    """predict with forward.c serving every batch (its limits overridden)."""
    def run(x0, xt):
        saved = fast_forward.FAST_FORWARD_MAX_BATCH, fast_forward.SMALL_NET_MAX_BATCH
        fast_forward.FAST_FORWARD_MAX_BATCH = fast_forward.SMALL_NET_MAX_BATCH = 10 ** 12
        try:
            return predict(x0, xt)
        finally:
            fast_forward.FAST_FORWARD_MAX_BATCH, fast_forward.SMALL_NET_MAX_BATCH = saved
    return run


def matmul_gflops(dtype) -> float:
    a, b = torch.randn(10000, 208, dtype=dtype), torch.randn(208, 832, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(20):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * 10000 * 208 * 832 / float(np.median(times)) / 1e9


def flops_per_problem(model) -> float:
    """Two per multiply-add of one answer: the shared net (inner + 1) times per recursion, and the
    answer's embeddings and decoder once per recursion."""
    c = model.config
    recursions = c.num_supervision_steps * c.num_outer_cycles
    net = sum(p.numel() for p in model.net.parameters())
    small = sum(p.numel() for m in (model.embed_controls, model.embed_error, model.decode) if m is not None
                for p in m.parameters())
    return 2.0 * recursions * ((c.num_inner_cycles + 1) * net + small)


def curve_bars(curve: dict) -> tuple[float, float]:
    """(the largest ratio of a batch's time per problem to the best smaller batch's, batch
    10,000's time per problem over batch 1's)."""
    batches = sorted(curve)
    worst = max(curve[b] / min(curve[a] for a in batches if a < b) for b in batches[1:])
    return worst, curve[batches[-1]] / curve[batches[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=["small", "medium", "large"],
                        help="model sizes (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="batches up to 1,000 and short timings (a smoke run)")
    args = parser.parse_args()
    batches = BATCHES[:-1] if args.quick else BATCHES
    seconds = 0.2 if args.quick else 1.0
    bf16_units = bool(bfloat16_units())
    precisions = ["float32", "float16"] + (["bfloat16"] if bf16_units else [])
    rng = np.random.default_rng(0)
    rate = {"float32": matmul_gflops(torch.float32)}
    if bf16_units:
        rate["bfloat16"] = matmul_gflops(torch.bfloat16)
    lines = ["How predict's time per problem changes with the batch, in each precision it offers on this "
             "CPU, beside its two paths alone (forward.c, PyTorch; float32). `trc info` on this machine:", ""]
    lines += [f"    {name:<9} {value}" for name, value in fast_forward.paths().items()]
    lines += ["", f"Float32 matrix-product rate, [10000, 208] x [208, 832]: {rate['float32']:.1f} GFLOP/s"
              + (f"; bfloat16: {rate['bfloat16']:.1f} GFLOP/s" if bf16_units else
                 " (no bfloat16 units: bfloat16 runs in PyTorch under autocast here, slower than float32, and is not timed)"), ""]
    bars = []
    for size in args.sizes:
        torch.manual_seed(0)
        model = TinyRecursiveControl.create(size, make_problem(system="double_integrator")).eval()
        with torch.no_grad():
            model.decode.weight.normal_(std=0.02)  # answers that move (the decoder starts at zero)
        flops = flops_per_problem(model)
        columns = {}
        for precision in precisions:
            model.set_inference_precision(precision)
            columns[f"predict {precision}"] = {b: per_problem_us(model.predict, b, rng, seconds) for b in batches}
            print(size, precision, {b: round(t, 1) for b, t in columns[f"predict {precision}"].items()}, flush=True)
        model.set_inference_precision("float32")
        columns["forward.c alone"] = {b: per_problem_us(c_only(model.predict), b, rng, seconds) for b in batches}
        columns["PyTorch alone"] = {b: per_problem_us(fast_forward.pytorch_only(model.predict), b, rng, seconds)
                                    for b in batches}
        lines += [f"## {size} ({sum(p.numel() for p in model.parameters()):,} parameters, "
                  f"{flops / 1e6:.1f} MFLOP per answer)", "",
                  "Microseconds per problem (median):", "",
                  "| batch | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for b in batches:
            lines.append(f"| {b:,} | " + " | ".join(f"{columns[c][b]:.1f}" for c in columns) + " |")
        lines.append("")
        for precision in precisions:
            worst, large = curve_bars(columns[f"predict {precision}"])
            bars.append(f"| {size} | {precision} | {worst:.2f} (bar <= {CLIFF}) {'met' if worst <= CLIFF else 'MISSED'} "
                        f"| {large:.2f} (bar <= {LARGE_OVER_ONE}) {'met' if large <= LARGE_OVER_ONE else 'MISSED'} |")
        if size == "medium" and not args.quick:
            share = flops / (1e-6 * columns["predict float32"][10000]) / 1e9 / rate["float32"]
            lines.append(f"Medium at batch 10,000: {share:.0%} of the float32 matrix-product rate "
                         f"(bar >= {MATMUL_SHARE:.0%}: {'met' if share >= MATMUL_SHARE else 'MISSED'}).")
            if bf16_units:
                gain = columns["predict float32"][10000] / columns["predict bfloat16"][10000]
                lines.append(f"bfloat16 over float32 at batch 10,000: {gain:.2f}x "
                             f"(bar >= {BFLOAT16_GAIN}: {'met' if gain >= BFLOAT16_GAIN else 'MISSED'}).")
            lines.append("")
    lines += ["## The bars on this CPU", "",
              f"| size | precision | worst step up (time per problem over the best smaller batch) | "
              f"batch {batches[-1]:,} over batch 1 |", "|---|---|---|---|", *bars]
    body = "\n".join(lines)
    print(body)
    if not args.quick:
        write_page("batch_curve", "Predict's time per problem by batch size", body)


if __name__ == "__main__":
    main()
