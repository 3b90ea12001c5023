"""Benchmark: data generation, training and inference speed, side by side, in one run.

    python benchmarks/performance.py [--skip_full_run] [--sizes small medium large]

Measures on this machine, and writes outputs/benchmark/performance.{json,md}:
- generation time of 10,000 double-integrator samples (default box; and [-5, 5], where the
  bound binds and the active-set QP runs), and of 10,000 Van der Pol labels by IPOPT on every core;
- training seconds per epoch for each model size (10,000 samples, batch 64), and the guide's
  full run (medium, 100 epochs, early stopping as in the guide) unless --skip_full_run;
- inference for each size: latency at batch 1 (median and p90 of 200 calls after warm-up) and
  throughput at batch 1,000 and 10,000, in predict (forward.c at small batches; also with
  float16 weights), eager PyTorch, torch.compile and ONNX Runtime (and
  on the GPU, synchronized, when there is one), next to the exact closed-form matrix
  u = M [x0; x*] (the physical limit on this problem) and the exact oracle;
- the same in bfloat16 (eager PyTorch under autocast, compiled, and predict on forward.c's AMX tiles
  where the CPU has them; skipped on a CPU without bfloat16 instructions, where it is emulated),
  and the accuracy of every path on the guide's test set, from the full run's model;
- parameters, checkpoint size, and peak resident memory of a fresh process that loads the
  model and runs batch 10,000;
- what this machine allows the architecture at all: at batch 1, the model's matrix products
  alone (the 24 passes' weights, chained as in one answer, nothing else) in ONNX Runtime, in
  PyTorch and on forward.c's own kernels (also with the shared net's weights in half precision,
  the floor of the float16-weights path), a lower bound on any implementation built on those
  kernels (forward.c's on the team of threads predict uses); at batch 10,000, the problems per
  second the plain-matmul rate would give if every FLOP of the model ran at it, and what the
  model's products alone reach there in PyTorch (float32 and bfloat16) and on forward.c's AMX
  tiles: the kernels' own limit;
- the bars, each with the measured figure and its bound on this machine: every size's fastest
  float32 batch-1 path within 1.2x of its matrix products alone (the fastest of the three; the
  float16-weights path against its own; predict against forward.c's products timed call after
  call, so that both see the same CPU speed), and its batch-10,000 rate at 70% or more
  of what the best matmul rate allows.
Ratios to the closed-form matrix are printed beside absolute times. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trc_lib import TinyRecursiveControl, load_model

from trc_lib.interfaces import workflow
from trc_lib.data import create_data_loaders, generate_dataset, load_dataset, make_problem, save_dataset
from trc_lib.evaluate import hardware
from trc_lib.export import OnnxController, export_onnx
from trc_lib.fast import c_library
from trc_lib.fast.c_library import cpu_flags
from trc_lib.fast.forward import FastForward, pytorch_only
from trc_lib.files import atomic_path, write_json
from trc_lib.training import train

from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "benchmark"  # performance.json and .md; the guide run has its own folder
BATCHES = (1, 1000, 10000)


def timed(function, repeats: int) -> list[float]:
    for _ in range(2):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def latency_and_throughput(predict, state_dim=2, synchronize=lambda: None) -> dict:
    """{'batch_1_median_ms', 'batch_1_p90_ms', 'batch_B_per_s' ...} for predict(x0, xt)."""
    rng = np.random.default_rng(0)
    result = {}
    for batch in BATCHES:
        x0, xt = (rng.uniform(-2, 2, (batch, state_dim)).astype(np.float32) for _ in range(2))

        def call():
            predict(x0, xt)
            synchronize()
        times = timed(call, 200 if batch == 1 else (20 if batch == 1000 else 5))
        if batch == 1:
            result["batch_1_median_ms"] = 1e3 * float(np.median(times))
            result["batch_1_p90_ms"] = 1e3 * float(np.percentile(times, 90))
        result[f"batch_{batch}_per_s"] = batch / float(np.median(times))
    return result


def closed_form_matrix(problem) -> np.ndarray:
    """M [N*m, 2n] with u* = M [x0; x*] when no bound is active: Gt (G Gt)^-1 [-A^N, I]."""
    Phi, Gamma = problem.system.transition_matrices
    G = Gamma[-1]
    return G.T @ np.linalg.solve(G @ G.T, np.hstack([-Phi[-1], np.eye(2)]))


def flops_per_problem(model) -> float:
    """Multiply-adds x 2 of one forward pass: every recursion runs the shared net n + 1 times
    (plus the small embeddings, counted too)."""
    c = model.config
    calls = c.num_supervision_steps * c.num_outer_cycles * (c.num_inner_cycles + 1)
    net = sum(p.numel() for p in model.net.parameters())
    per_recursion = sum(p.numel() for m in (model.embed_controls, model.embed_error, model.decode) if m is not None
                        for p in m.parameters())
    recursions = c.num_supervision_steps * c.num_outer_cycles
    return 2.0 * (calls * net + recursions * per_recursion)


def matmul_gflops(dtype=torch.float32) -> float:
    """What this CPU's matrix units deliver on a net-sized product, [10000, 208] x [208, 832]."""
    a, b = torch.randn(10000, 208, dtype=dtype), torch.randn(208, 832, dtype=dtype)
    seconds = float(np.median(timed(lambda: a @ b, 20)))
    return 2 * 10000 * 208 * 832 / seconds / 1e9


def matrix_product_chain(model) -> list[np.ndarray]:
    """The weight matrices one answer multiplies by, in order, as [in, out] float32 arrays.

    Per recursion: embed_controls, then (n + 1) calls of the shared net (two matrices per
    block), then decode, whose output feeds the next recursion's embed_controls, so the chain
    is as sequential as the model. The small error embedding is left out (a lower bound).
    """
    c = model.config
    net = [w for block in model.net for w in (block.gate_up.weight, block.down.weight)]
    one_recursion = [model.embed_controls.weight] + net * (c.num_inner_cycles + 1) + [model.decode.weight]
    return [w.detach().T.contiguous().numpy() for w in
            one_recursion * (c.num_supervision_steps * c.num_outer_cycles)]


def matrix_products_alone_ms(model) -> dict:
    """Median ms at batch 1 of the model's matrix products alone, in ONNX Runtime and in eager
    PyTorch: what those kernels cost before any of the model's other operations. SwiGLU's
    gate-times-up is replaced by taking the first half of the gate_up product (a Slice), so
    each product's input has the shape it has in the model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from trc_lib.export import _session
    matrices = matrix_product_chain(model)
    nodes, initializers, current, width = [], [], "x", matrices[0].shape[0]
    for i, w in enumerate(matrices):
        if width != w.shape[0]:  # gate_up [D, 2H] feeds down [H, D]
            nodes.append(helper.make_node("Slice", [current, "zero", f"width{i}", "one"], [f"s{i}"]))
            initializers.append(numpy_helper.from_array(np.array([w.shape[0]], np.int64), f"width{i}"))
            current = f"s{i}"
        initializers.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"p{i}"]))
        current, width = f"p{i}", w.shape[1]
    initializers += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
                     numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(
        nodes, "matrix_products", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, matrices[0].shape[0]])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, matrices[-1].shape[1]])], initializers)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "matrix_products.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        session = _session(path)
        x = np.ones((1, matrices[0].shape[0]), np.float32)
        onnx_ms = 1e3 * float(np.median(timed(lambda: session.run(None, {"x": x}), 300)))
    weights = [torch.from_numpy(w) for w in matrices]

    @torch.inference_mode()
    def chain():
        h = torch.ones(1, weights[0].shape[0])
        for w in weights:
            h = h[:, :w.shape[0]] @ w
        return h
    torch_ms = 1e3 * float(np.median(timed(chain, 300)))
    alone = {"onnx_runtime_ms": onnx_ms, "pytorch_ms": torch_ms, "matrices": len(matrices)}
    # forward.c's own kernels, the same products on vectors of zeros (float32 arithmetic takes as long
    # on any numbers; the AMX tiles do not, so their floor runs on scattered ones): float32, and the shared
    # net's weights in half precision (the floor of the float16-weights path)
    for half, key in ((False, "forward_c_ms"), (True, "forward_c_half_ms")):
        engine = FastForward.of(model, "float16" if half else "float32")
        if engine is not None:
            alone[key] = 1e3 * float(np.median(timed(engine.products_only, 300)))
            alone[key.replace("_ms", "_threads")] = engine.threads
    return alone


def side_by_side(models: dict) -> dict:
    """{precision: {'predict_ms', 'products_ms'}}: predict at batch 1 and forward.c's matrix products
    alone in the same precision, call after call (300 of each, medians): the two figures each
    batch-1 bar compares, under the same conditions (this CPU's speed drifts by a tenth between
    minutes, as much as the bar's margin). models: {precision: model set to it}."""
    rng = np.random.default_rng(0)
    x0, xt = (rng.uniform(-2, 2, (1, 2)).astype(np.float32) for _ in range(2))
    result = {}
    for precision, model in models.items():
        engine = FastForward.of(model, precision)
        if engine is None:
            continue
        predict_times, product_times = [], []
        for round_ in range(305):
            started = time.perf_counter()
            model.predict(x0, xt)
            middle = time.perf_counter()
            engine.products_only()
            if round_ >= 5:  # warm-up
                predict_times.append(middle - started)
                product_times.append(time.perf_counter() - middle)
        result[precision] = {"predict_ms": 1e3 * float(np.median(predict_times)),
                             "products_ms": 1e3 * float(np.median(product_times))}
    return result


def matrix_products_alone_per_s(model, batch: int = 10000, dtype=torch.bfloat16) -> float:
    """Problems per second of the model's matrix products alone at `batch`, in PyTorch (oneDNN)
    in `dtype`: the chain of matrix_product_chain, each product reading the one before's output,
    nothing else. What this CPU's matmul kernels deliver on the model's own shapes, which are
    narrower than the plain-matmul benchmark's."""
    weights = [torch.from_numpy(w).to(dtype) for w in matrix_product_chain(model)]
    start = torch.ones(batch, weights[0].shape[0], dtype=dtype)

    @torch.inference_mode()
    def chain():
        h = start
        for w in weights:
            h = h[:, :w.shape[0]] @ w
        return h
    return batch / float(np.median(timed(chain, 5)))


def bfloat16_units() -> str:
    """The CPU's bfloat16 matrix instructions, from /proc/cpuinfo (Linux): what makes bfloat16 fast."""
    if not cpu_flags():
        return "unknown"
    return ", ".join(sorted(c_library.bfloat16_units())) or "none"


def accuracy_rows(checkpoint, test, onnx_path) -> dict:
    """Success, terminal error and cost gap of one trained model on `test`, per inference path:
    the speed options must not cost the accuracy bars."""
    from trc_lib.compare import TRCController, evaluate_controller
    rows = {}
    for precision in ("float32", "bfloat16"):  # 1,000 problems at once: PyTorch, under autocast for bfloat16
        model = load_model(checkpoint).set_inference_precision(precision)
        rows[f"eager PyTorch, {precision}"] = pytorch_only(evaluate_controller)(TRCController(model), test, timing=False)
    if FastForward.of(model, "bfloat16") is not None:  # what predict runs in bfloat16 on this CPU
        rows["forward.c's AMX tiles, bfloat16"] = evaluate_controller(TRCController(model), test, timing=False)
    rows["ONNX Runtime"] = evaluate_controller(OnnxController(onnx_path), test, timing=False)
    return rows


def memory_probe(size: str) -> None:
    """Child-process mode: load a model of `size`, run batch 10,000, print peak RSS in MiB."""
    model = TinyRecursiveControl.create(size).eval()
    x = np.zeros((10000, 2), np.float32)
    model.predict(x, x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_memory_mib(size: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--_memory_probe", size], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "large"],
                        choices=["small", "medium", "large"], help="model sizes to measure")
    parser.add_argument("--skip_full_run", action="store_true", help="skip the guide's 100-epoch run (~4 min)")
    parser.add_argument("--no_compile", action="store_true", help="skip torch.compile (it compiles for minutes)")
    parser.add_argument("--report_only", action="store_true",
                        help="measure nothing: print the tables of the last run (outputs/benchmark/performance.json)")
    parser.add_argument("--_memory_probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_probe:
        return memory_probe(args._memory_probe)
    if args.report_only:
        report = json.loads((OUT / "performance.json").read_text())
        return print(render(report, report["inference"]["exact closed-form matrix (numpy)"]))

    work = Path(tempfile.mkdtemp(prefix="trc-performance-"))
    problem = make_problem()
    report = {"hardware": hardware(), "generation": {}, "training": {}, "inference": {}, "models": {},
              "cpu_matmul_gflops": matmul_gflops(), "cpu_matmul_gflops_bfloat16": matmul_gflops(torch.bfloat16),
              "bfloat16_units": bfloat16_units(), "accuracy": {}}
    quiet = lambda *_: None

    # ---- data generation -------------------------------------------------------------------
    for label, box in (("default box [-2, 2]", (-2.0, 2.0)), ("box [-5, 5], bound binds", (-5.0, 5.0))):
        times = timed(lambda: generate_dataset(problem, 10000, seed=42, state_range=box), 3)
        report["generation"][label] = float(np.median(times))
        print(f"generate 10,000 samples, {label}: {np.median(times):.3f} s", flush=True)
    from trc_lib.oracles.labels import solve_nonlinear, vanderpol_problem
    vdp = vanderpol_problem()
    x0 = np.random.default_rng(0).uniform(-2, 2, (10000, 2))
    started = time.perf_counter()
    _, solved = solve_nonlinear(vdp, x0, np.zeros_like(x0), progress=False)
    label = f"Van der Pol, IPOPT, {os.cpu_count()} processes ({100 * solved.mean():.1f}% solved)"
    report["generation"][label] = time.perf_counter() - started
    print(f"10,000 {label}: {report['generation'][label]:.1f} s", flush=True)
    train_path = save_dataset(generate_dataset(problem, 10000, seed=42), work / "train" / "lqr_dataset.npz")

    # ---- training -------------------------------------------------------------------------
    for size in args.sizes:
        torch.manual_seed(0)
        loaders = create_data_loaders(*load_dataset(train_path), batch_size=64)
        model = TinyRecursiveControl.create(size, problem=problem)
        started = time.perf_counter()
        train(model, *loaders, epochs=2, output_dir=work / f"train-{size}", progress=False, log=quiet)
        seconds = (time.perf_counter() - started) / 2
        report["training"][f"{size}: seconds per epoch"] = seconds
        print(f"train {size}: {seconds:.1f} s per epoch (10,000 samples, batch 64)", flush=True)
    if not args.skip_full_run:
        started = time.perf_counter()
        workflow.train_model(train_path, output_dir=work / "full", model_size="medium", epochs=100, batch_size=64,
                             progress=False, log=quiet)
        stats = json.loads((work / "full" / "training_stats.json").read_text())
        report["training"]["guide's full run (medium, 100 epochs, patience 20): minutes"] = \
            (time.perf_counter() - started) / 60
        report["training"]["guide's full run: epochs run"] = stats["epoch"]
        print(f"guide's full run: {(time.perf_counter() - started) / 60:.1f} min, {stats['epoch']} epochs", flush=True)
        test = generate_dataset(problem, 1000, seed=123)  # the guide's test set
        export_onnx(load_model(work / "full" / "best_model.pt"), work / "full.onnx", log=quiet)
        report["accuracy"] = accuracy_rows(work / "full" / "best_model.pt", test, work / "full.onnx")

    # ---- inference --------------------------------------------------------------------------
    M = closed_form_matrix(problem).astype(np.float32)
    reference = latency_and_throughput(lambda x0, xt: np.concatenate([x0, xt], axis=1) @ M.T)
    report["inference"]["exact closed-form matrix (numpy)"] = reference
    from trc_lib.oracles.closed_form import solve
    report["inference"]["exact oracle (optimal.solve, float64)"] = latency_and_throughput(
        lambda x0, xt: solve(problem, x0.astype(np.float64), xt.astype(np.float64)))
    for size in args.sizes:
        torch.manual_seed(0)
        model = TinyRecursiveControl.create(size, problem=problem).eval()
        checkpoint = work / f"{size}.pt"
        torch.save(model.state_dict(), checkpoint)
        onnx_path = work / f"{size}.onnx"
        export_onnx(model, onnx_path, log=quiet)
        import onnx
        report["models"][size] = {"parameters": model.num_parameters(),
                                  "mflop_per_problem": flops_per_problem(model) / 1e6,
                                  "onnx_nodes": len(onnx.load(str(onnx_path)).graph.node),
                                  "checkpoint_bytes": checkpoint.stat().st_size,
                                  "onnx_bytes": onnx_path.stat().st_size,
                                  "peak_rss_mib_batch_10000": peak_memory_mib(size),
                                  "matrix_products_alone_batch_1": matrix_products_alone_ms(model),
                                  "matrix_products_alone_batch_10000_per_s": {
                                      "float32": matrix_products_alone_per_s(model, dtype=torch.float32),
                                      **({"bfloat16": matrix_products_alone_per_s(model)}
                                         if report["bfloat16_units"] != "none" else {})}}
        report["inference"][f"{size}: predict (forward.c to batch 16)"] = latency_and_throughput(model.predict)
        print(f"{size} predict: {report['inference'][f'{size}: predict (forward.c to batch 16)']}", flush=True)
        half = TinyRecursiveControl.create(size, problem=problem).eval()
        half.load_state_dict(model.state_dict())
        half.set_inference_precision("float16")
        report["inference"][f"{size}: predict, float16 weights"] = latency_and_throughput(half.predict)
        print(f"{size} predict, float16 weights: {report['inference'][f'{size}: predict, float16 weights']}",
              flush=True)
        report["models"][size]["batch_1_side_by_side"] = side_by_side({"float32": model, "float16": half})
        report["inference"][f"{size}: eager PyTorch"] = latency_and_throughput(pytorch_only(model.predict))
        print(f"{size} eager: {report['inference'][f'{size}: eager PyTorch']}", flush=True)
        if report["bfloat16_units"] != "none":  # without them bfloat16 is emulated: slower, and minutes to time
            bfloat16 = TinyRecursiveControl.create(size, problem=problem).eval().set_inference_precision("bfloat16")
            bfloat16.load_state_dict(model.state_dict())
            report["inference"][f"{size}: eager PyTorch, bfloat16"] = latency_and_throughput(pytorch_only(bfloat16.predict))
            print(f"{size} eager bfloat16: {report['inference'][f'{size}: eager PyTorch, bfloat16']}", flush=True)
            tiles = FastForward.of(bfloat16, "bfloat16")
            if tiles is not None:  # AMX: predict in bfloat16 runs forward.c's tiles at every batch
                report["inference"][f"{size}: predict, bfloat16 (forward.c, AMX tiles)"] = latency_and_throughput(
                    bfloat16.predict)
                print(f"{size} AMX tiles: {report['inference'][f'{size}: predict, bfloat16 (forward.c, AMX tiles)']}",
                      flush=True)
                report["models"][size]["matrix_products_alone_batch_10000_per_s"]["AMX tiles"] = \
                    10000 / float(np.median(timed(lambda: tiles.products_only(10000), 5)))
                report["models"][size]["tile_threads"] = tiles.threads
        report["models"][size]["eager_gflops_batch_10000"] = (
            report["inference"][f"{size}: eager PyTorch"]["batch_10000_per_s"] * flops_per_problem(model) / 1e9)
        if not args.no_compile:
            compiled = TinyRecursiveControl.create(size, problem=problem).eval()
            compiled.load_state_dict(model.state_dict())
            compiled.compile_inference()
            report["inference"][f"{size}: torch.compile"] = latency_and_throughput(compiled.predict)
            print(f"{size} compiled: {report['inference'][f'{size}: torch.compile']}", flush=True)
            if report["bfloat16_units"] != "none":  # inductor fuses the elementwise work between the products
                fused = TinyRecursiveControl.create(size, problem=problem).eval().set_inference_precision("bfloat16")
                fused.load_state_dict(model.state_dict())
                fused.compile_inference()
                report["inference"][f"{size}: torch.compile, bfloat16"] = latency_and_throughput(fused.predict)
                print(f"{size} compiled bfloat16: {report['inference'][f'{size}: torch.compile, bfloat16']}",
                      flush=True)
        report["inference"][f"{size}: ONNX Runtime"] = latency_and_throughput(OnnxController(onnx_path).predict)
        print(f"{size} onnx: {report['inference'][f'{size}: ONNX Runtime']}", flush=True)
        if torch.cuda.is_available():
            gpu = TinyRecursiveControl.create(size, problem=problem).eval().cuda()
            gpu.load_state_dict(model.state_dict())
            report["inference"][f"{size}: eager PyTorch, GPU"] = latency_and_throughput(
                lambda x0, xt: gpu.predict(x0, xt, device="cuda"), synchronize=torch.cuda.synchronize)

    write_json(OUT / "performance.json", report)
    markdown = render(report, reference)
    with atomic_path(OUT / "performance.md") as tmp:
        tmp.write_text(markdown + "\n")
    write_page("performance", "Speed against the hardware's limits", markdown)
    print("\n" + markdown)


def render(report, reference) -> str:
    hw = report["hardware"]
    lines = [f"Hardware: {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']} ({hw['torch_threads']} threads)"
             + (f", GPU {hw['gpu']}" if hw["gpu"] else ", no GPU"), "",
             "| data generation, 10,000 samples | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["generation"].items()]
    lines += ["", "| training | value |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["training"].items()]
    lines += ["", "| inference | batch 1 median (p90) ms | x matrix | batch 1,000 /s | batch 10,000 /s | x matrix |",
              "|---|---|---|---|---|---|"]
    for name, r in report["inference"].items():
        lines.append(f"| {name} | {r['batch_1_median_ms']:.3f} ({r['batch_1_p90_ms']:.3f}) "
                     f"| {r['batch_1_median_ms'] / reference['batch_1_median_ms']:.0f} "
                     f"| {r['batch_1000_per_s']:,.0f} | {r['batch_10000_per_s']:,.0f} "
                     f"| 1/{reference['batch_10000_per_s'] / r['batch_10000_per_s']:,.0f} |")
    if report["accuracy"]:
        lines += ["", "Accuracy of the inference paths: the guide's full-run model on the guide's 1,000 test problems",
                  "", "| path | success | terminal error mean / max | cost gap median / p90 |", "|---|---|---|---|"]
        for name, r in report["accuracy"].items():
            lines.append(f"| {name} | {100 * r['success_rate']:.1f}% | {r['terminal_error']['mean']:.2e} / "
                         f"{r['terminal_error']['max']:.2e} | {100 * r['cost_gap']['median']:.4f}% / "
                         f"{100 * r['cost_gap']['p90']:.4f}% |")
    lines += ["", f"Plain matmul [10000, 208] x [208, 832] on this CPU: {report['cpu_matmul_gflops']:.0f} GFLOP/s in "
                  f"float32, {report['cpu_matmul_gflops_bfloat16']:.0f} GFLOP/s in bfloat16 (bfloat16 instructions: "
                  f"{report['bfloat16_units']}"
                  + ("; the bfloat16 inference rows are skipped on such a CPU)" if report["bfloat16_units"] == "none"
                     else ")"),
              "", "| model | parameters | MFLOP per problem | GFLOP/s, eager, batch 10,000 | ONNX nodes | checkpoint "
                  "| ONNX file | peak RSS, batch 10,000 |", "|---|---|---|---|---|---|---|---|"]
    for size, m in report["models"].items():
        lines.append(f"| {size} | {m['parameters']:,} | {m['mflop_per_problem']:.1f} | {m['eager_gflops_batch_10000']:.0f} "
                     f"| {m['onnx_nodes']:,} | {m['checkpoint_bytes'] / 2**20:.1f} MiB "
                     f"| {m['onnx_bytes'] / 2**20:.1f} MiB | {m['peak_rss_mib_batch_10000']:.0f} MiB |")
    lines += ["", "What this machine allows each size at all: the matrix products of one answer alone at batch 1 "
                  "(each reading the one before's output; a lower bound for any implementation on the same "
                  "kernels; forward.c's on the team of threads its predict uses), the problems per second at "
                  "batch 10,000 if every FLOP ran at the best plain-matmul rate above (the large model's bigger "
                  "matrices can run a little faster than that), and what the same products alone reach at "
                  "batch 10,000 in PyTorch and on forward.c's AMX tiles (where the CPU has them: each group of "
                  "problems' products from the cache, nothing between them)", "",
              "| model | matrix products per answer | alone in ONNX Runtime, batch 1 | alone in PyTorch, batch 1 "
              "| alone in forward.c, batch 1 | alone in forward.c, float16 weights, batch 1 "
              "| at the matmul rate, batch 10,000 | alone, batch 10,000, float32 | alone, batch 10,000, bfloat16 "
              "| alone, batch 10,000, AMX tiles |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    ms = lambda value: "-" if value is None else f"{value:.3f} ms"
    team = lambda alone, key: "" if alone.get(key, 1) == 1 else f" ({alone[key]} threads)"
    per_s = lambda value: "-" if value is None else f"{value:,.0f}/s"
    for size, m in report["models"].items():
        alone, wide = m["matrix_products_alone_batch_1"], m.get("matrix_products_alone_batch_10000_per_s", {})
        lines.append(f"| {size} | {alone['matrices']} | {ms(alone['onnx_runtime_ms'])} | {ms(alone['pytorch_ms'])} "
                     f"| {ms(alone.get('forward_c_ms'))}{team(alone, 'forward_c_threads')} "
                     f"| {ms(alone.get('forward_c_half_ms'))}{team(alone, 'forward_c_half_threads')} "
                     f"| {ceiling_per_s(report, size):,.0f}/s | {per_s(wide.get('float32'))} "
                     f"| {per_s(wide.get('bfloat16'))} | {per_s(wide.get('AMX tiles'))}"
                     + ("" if "tile_threads" not in m else f" ({m['tile_threads']} threads)") + " |")
    return "\n".join(lines + [""] + bar_rows(report))


def ceiling_per_s(report, size: str) -> float:
    """Problems per second at the best plain-matmul rate of this CPU (float32 or bfloat16)."""
    rate = max(report["cpu_matmul_gflops"], report["cpu_matmul_gflops_bfloat16"]) * 1e9
    return rate / (report["models"][size]["mflop_per_problem"] * 1e6)


def bar_rows(report) -> list[str]:
    """The bars: each model size close to the hardware (batch 1 against its own matrix products
    alone, batch 10,000 against the CPU's best matmul rate), and the data and training bars."""
    rows = ["| bar | measured | bound on this machine | met |", "|---|---|---|---|"]
    row = lambda bar, measured, bound, met: rows.append(f"| {bar} | {measured} | {bound} | {'yes' if met else 'NO'} |")
    training, generation, inference = report["training"], report["generation"], report["inference"]
    for size, model in report["models"].items():
        paths = {k.removeprefix(f"{size}: "): v for k, v in inference.items() if k.startswith(f"{size}:")}
        alone = model["matrix_products_alone_batch_1"]
        # float32 paths against the fastest float32 kernels; the float16-weights path against the
        # same products in half precision (its own arithmetic), each precision its own bar
        single = {k: v for k, v in paths.items() if "float16" not in k and "bfloat16" not in k}
        floor = min(alone[key] for key in ("onnx_runtime_ms", "pytorch_ms", "forward_c_ms") if key in alone)
        fastest = min(single, key=lambda k: single[k]["batch_1_median_ms"])
        ms = single[fastest]["batch_1_median_ms"]
        together = model.get("batch_1_side_by_side", {})
        if "float32" in together and fastest.startswith("predict") and floor == alone.get("forward_c_ms"):
            # predict against forward.c's products, call after call: the same comparison without the drift
            ms, floor = together["float32"]["predict_ms"], together["float32"]["products_ms"]
            fastest += ", call after call with the products"
        row(f"{size}, batch 1: the fastest float32 path <= 1.2x its matrix products alone", f"{ms:.3f} ms ({fastest})",
            f"{floor:.3f} ms, the matrix products alone (fastest kernels): {ms / floor:.2f}x", ms <= 1.2 * floor)
        half = paths.get("predict, float16 weights")
        if half is not None and "forward_c_half_ms" in alone:
            ms, floor_half = half["batch_1_median_ms"], alone["forward_c_half_ms"]
            if "float16" in together:
                ms, floor_half = together["float16"]["predict_ms"], together["float16"]["products_ms"]
            row(f"{size}, batch 1, float16 weights: <= 1.2x its matrix products alone in half precision",
                f"{ms:.3f} ms ({ms / floor:.2f}x the float32 floor)",
                f"{floor_half:.3f} ms, the same products in half precision: {ms / floor_half:.2f}x",
                ms <= 1.2 * floor_half)
        fastest = max(paths, key=lambda k: paths[k]["batch_10000_per_s"])
        per_s, ceiling = paths[fastest]["batch_10000_per_s"], ceiling_per_s(report, size)
        products = max(model.get("matrix_products_alone_batch_10000_per_s", {}).values(), default=None)
        row(f"{size}, batch 10,000: >= 70% of the problems/s the matmul rate allows", f"{per_s:,.0f}/s ({fastest})",
            f"{ceiling:,.0f}/s at the best matmul rate: {100 * per_s / ceiling:.0f}%"
            + ("" if products is None else f" (the products alone reach {100 * products / ceiling:.0f}% on the "
                                           f"fastest kernels; this path runs at {100 * per_s / products:.0f}% of them)"),
            per_s >= 0.7 * ceiling)
    minutes = training.get("guide's full run (medium, 100 epochs, patience 20): minutes")
    if minutes is not None:
        epochs = training["guide's full run: epochs run"]
        row("guide's full run trains in <= 10 min on CPU", f"{minutes:.1f} min ({epochs:.0f} epochs, early stopping)",
            "-", minutes <= 10)
    seconds = generation["default box [-2, 2]"]
    row("10,000 double-integrator samples in <= 1 s", f"{seconds:.3f} s", "-", seconds <= 1)
    label, seconds = next((k, v) for k, v in generation.items() if k.startswith("Van der Pol"))
    row("10,000 Van der Pol IPOPT labels in <= 2 min on both cores", f"{seconds:.1f} s ({label})", "-", seconds <= 120)
    return rows


if __name__ == "__main__":
    sys.exit(main())
