"""Does recursion help? Variants of the model trained on the same data with the same budget.

Every variant has the same shared network (so the same parameter count, to within the error
embedding's 2 x D weights) and is trained for the same epochs on the same samples; only how
often the network is applied, and what it is told, changes:

    MLP (no recursion)      one pass of context -> net -> controls: N_in = 1, N_out = 1, N_sup = 1,
                            no error feedback. A feed-forward residual MLP of the same weights.
    TRC, K steps            K = 1, 2, 4, 8 supervision steps (refinements), each with N_out = 2
                            recursions of N_in = 3 latent updates, error feedback on.
    TRC, no error feedback  the default (3 steps) without the simulated terminal miss.
    TRC, no deep supervision one supervision step of N_out = 6 recursions: the same number of
                            network passes as the default's 3 x 2, but one loss on the last answer.

Then the default model is run with more and fewer refinement steps at test time than it was
trained with (`steps_at_inference`): can more steps at inference buy accuracy?
"""

from __future__ import annotations

from pathlib import Path

from ..compare import TRCController
from ..data import ControlDataset
from ..evaluate import metrics, score_controls, time_inference

VARIANTS = {
    "MLP (no recursion)": dict(num_inner_cycles=1, num_outer_cycles=1, num_supervision_steps=1, error_feedback=False),
    "TRC, 1 step": dict(num_supervision_steps=1),
    "TRC, 2 steps": dict(num_supervision_steps=2),
    "TRC, 4 steps": dict(num_supervision_steps=4),
    "TRC, 8 steps": dict(num_supervision_steps=8),
    "TRC, 3 steps (default)": dict(num_supervision_steps=3),
    "TRC, no error feedback": dict(num_supervision_steps=3, error_feedback=False),
    "TRC, no deep supervision": dict(num_supervision_steps=1, num_outer_cycles=6),
}


def network_passes(config) -> int:
    """Applications of the shared net per answer: N_sup * N_out * (N_in + 1)."""
    return config.num_supervision_steps * config.num_outer_cycles * (config.num_inner_cycles + 1)


def train_variants(train_path, output_dir, variants=None, model_size="small", epochs=20, batch_size=64, seed=0,
                   progress=False, log=print, workers=None) -> dict:
    """Train each variant (names of VARIANTS) into output_dir/<slug>; returns {name: model}.

    workers: None (or one process) trains them one after another in this process; an
    oracles.workers.Workers trains them side by side on its Dask workers, one variant per worker
    (each worker writes its checkpoint into output_dir, so on several machines output_dir must be
    a shared folder). Each variant is seeded the same way wherever it trains.
    """
    from ..training import train_model
    names = list(variants or VARIANTS)
    folders = {name: Path(output_dir) / _slug(name) for name in names}
    options = dict(model_size=model_size, epochs=epochs, batch_size=batch_size, seed=seed, log=lambda *_: None)
    if workers is None or (not workers.address and workers.processes == 1):
        models = {}
        for name in names:
            log(f"training {name}")
            models[name] = train_model(train_path, output_dir=folders[name], progress=progress, **options,
                                       **VARIANTS[name])
        return models
    from distributed import as_completed

    from ..checkpoint import load_model
    from ..errors import TRCError
    from ..oracles.workers import lost_cluster_errors
    client = workers.client()
    log(f"training {len(names)} variants on {workers.count()} Dask workers")
    futures = {client.submit(_train_on_worker, str(Path(train_path).resolve()), str(folders[name].resolve()),
                             {**options, **VARIANTS[name]}, pure=False): name for name in names}
    try:
        for future in as_completed(futures):
            future.result()  # a worker's error is raised here
            log(f"trained {futures[future]}")
    except lost_cluster_errors() as error:
        raise TRCError(f"workers: the Dask cluster failed mid-run ({type(error).__name__}: {error}); the variants "
                       f"trained so far are in {output_dir}") from None
    finally:
        client.cancel(list(futures))
    return {name: load_model(folders[name] / "best_model.pt") for name in names}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _train_on_worker(train_path: str, output_dir: str, options: dict) -> None:
    """Train one variant into output_dir on a Dask worker; the caller reads its checkpoint."""
    from ..training import train_model
    train_model(train_path, output_dir=output_dir, progress=False, **options)


def score_variants(models: dict, test: ControlDataset, success_threshold=0.1, timing=True) -> list[dict]:
    """One row per variant: parameters, network passes, success, terminal error, cost gap, time at batch 1."""
    rows = []
    for name, model in models.items():
        scores = score_controls(test, model.predict(test.initial_states, test.target_states), success_threshold)
        row = {"variant": name, "num_parameters": model.num_parameters(), "network_passes": network_passes(model.config),
               **metrics(scores, success_threshold)}
        if timing:
            row["batch_1_ms"] = time_inference(TRCController(model).predict, test.initial_states, test.target_states,
                                               1, repeats=50)["median_ms"]
        rows.append(row)
    return rows


def steps_at_inference(model, test: ControlDataset, steps=(1, 2, 3, 4, 6, 8), success_threshold=0.1) -> list[dict]:
    """The same trained model run for other numbers of refinement steps at test time."""
    import numpy as np
    import torch
    rows = []
    x0 = torch.as_tensor(test.initial_states, dtype=torch.float32)
    xt = torch.as_tensor(test.target_states, dtype=torch.float32)
    model.eval()
    for k in steps:
        with torch.inference_mode():
            controls = model(x0, xt, num_supervision_steps=k)[-1].double().numpy()
        m = metrics(score_controls(test, np.asarray(controls), success_threshold), success_threshold)
        rows.append({"steps": k, "trained_steps": model.config.num_supervision_steps, **m})
    return rows


def format_variants(rows: list[dict]) -> str:
    lines = ["| variant | params | net passes | success | terminal error median | cost gap median / p90 | batch-1 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = f"{r['batch_1_ms']:.2f}" if "batch_1_ms" in r else "-"
        lines.append(f"| {r['variant']} | {r['num_parameters']:,} | {r['network_passes']} | "
                     f"{100 * r['success_rate']:.1f}% | {r['terminal_error']['median']:.2e} | "
                     f"{100 * r['cost_gap']['median']:.3f}% / {100 * r['cost_gap']['p90']:.3f}% | {ms} |")
    return "\n".join(lines)


def format_steps(rows: list[dict]) -> str:
    lines = ["| refinement steps at inference | success | terminal error median | cost gap median |", "|---|---|---|---|"]
    for r in rows:
        mark = " (trained)" if r["steps"] == r["trained_steps"] else ""
        lines.append(f"| {r['steps']}{mark} | {100 * r['success_rate']:.1f}% | {r['terminal_error']['median']:.2e} | "
                     f"{100 * r['cost_gap']['median']:.3f}% |")
    return "\n".join(lines)
