"""GTP selection quality on the real demo data: projection dimension and per-example weights.

    python benchmarks/bench_gtp_quality.py projection [--scenario targeted-text] [--seeds 0 1 2]
    python benchmarks/bench_gtp_quality.py weights [--scenario targeted-text] [--seeds 0 1 2]

``projection`` (compressive sampling): the proxy's plain per-example gradients at every
checkpoint are computed unprojected (``torch.func``, as the datastore does), then projected by
the datastore's seeded Gaussian projector to each ``--dims`` value and stored as float16, as
the datastore would. GTP (non-negative pursuit, uniform checkpoint weights) runs on each at
each budget. Reported per dimension, mean over projection seeds: overlap of the selection
with the one made on unprojected gradients, the selection's relative residual in the
unprojected space (non-negative least squares of the selected unprojected trajectories
against the unprojected target), and target test accuracy of a fresh model trained on the
selection (``curation.evaluate``, the trainer of the quality benchmark).

``weights``: for each chain seed the whole chain runs (``curation.workflow.run_selection``:
proxy warm-up, gradient store, GTP), and each selection is evaluated twice, with uniform loss
weights and with the pursuit's weights as per-example loss weights
(``EvalConfig(use_weights=True)``; fill picks have weight 0 and so drop out of training).

Both print a table; nothing is cached outside ``--work-dir`` (default: a temp directory).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.demo_data import ScenarioConfig, build_scenario  # noqa: E402
from curation.embed import input_matrix  # noqa: E402
from curation.evaluate import EvalConfig, evaluate_subset  # noqa: E402
from curation.gradients import per_example_gradients  # noqa: E402
from curation.pool import validate_table  # noqa: E402
from curation.projectors import GaussianProjector  # noqa: E402
from curation.proxies.classifier import parameter_names  # noqa: E402
from curation.pursuit import pursuit  # noqa: E402
from curation.selectors import make_selector, resolve_budget  # noqa: E402
from curation.workflow import GradientSettings, cached_proxy, n_classes_of, run_selection  # noqa: E402

SIZES = {"targeted-text": (3000, 40), "images": (3000, 40), "digits": (1200, 30)}


def splits(scenario: str):
    pool_size, target_size = SIZES[scenario]
    tables = build_scenario(ScenarioConfig(scenario, pool_size=pool_size,
                                           target_size=target_size))
    return tuple(validate_table(t, source=f"{scenario} {name}")
                 for t, name in zip((tables.pool, tables.target, tables.test),
                                    ("pool", "target", "test"), strict=True))


def unprojected(proxy, x: np.ndarray, y: np.ndarray, batch: int = 256) -> np.ndarray:
    """(n, checkpoints, n_params) float32 plain per-example gradients at every checkpoint."""
    models = [proxy.load_model(c) for c in proxy.checkpoints]
    names = parameter_names(models[0], "all")
    out = []
    for model in models:
        rows = [per_example_gradients(model, names, torch.tensor(x[s:s + batch]),
                                      torch.tensor(y[s:s + batch])).numpy()
                for s in range(0, len(x), batch)]
        out.append(np.concatenate(rows))
    return np.stack(out, axis=1)


def projected(grads: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """The datastore's projection of each checkpoint block, stored as float16, flattened."""
    projector = GaussianProjector(grads.shape[2], dim, seed=seed)
    blocks = [projector(torch.from_numpy(grads[:, c])).numpy() for c in range(grads.shape[1])]
    return np.stack(blocks, axis=1).astype(np.float16).reshape(len(grads), -1)


def true_residual(full: np.ndarray, target: np.ndarray, picked: np.ndarray) -> float:
    """Relative residual of the best non-negative combination of the picks, unprojected."""
    if len(picked) == 0:
        return 1.0
    _, res = nnls(full[picked].T.astype(np.float64), target, maxiter=50 * len(picked))
    return res / np.linalg.norm(target)


def projection(args) -> None:
    pool, target, test = splits(args.scenario)
    work = Path(args.work_dir)
    px, tx, ex = (input_matrix(p, work / "embeddings") for p in (pool, target, test))
    n_classes = int(max(pool.labels.max(), test.labels.max(), target.labels.max())) + 1
    proxy = cached_proxy(work, pool.content_hash, px, pool.labels, n_classes_of(pool, target),
                         GradientSettings())
    full_pool = unprojected(proxy, px, pool.labels)
    target_grads = unprojected(proxy, tx, target.labels)
    full_target = target_grads.astype(np.float64).mean(axis=0).reshape(-1)
    print(f"{args.scenario}: pool {len(pool)}, unprojected trajectory "
          f"{full_pool.shape[1]} x {full_pool.shape[2]} dims (checkpoints x parameters)")
    config = EvalConfig(seeds=(0,))

    def accuracy(rows: np.ndarray) -> float:
        return evaluate_subset(px[rows], pool.labels[rows], ex, test.labels, n_classes,
                               config).mean

    records = []
    for budget in args.budgets:
        k = resolve_budget(budget, len(pool))
        ref = pursuit(full_pool.reshape(len(pool), -1), full_target, k).indices
        records.append({"budget": budget, "dim": "unprojected", "overlap": 1.0,
                        "residual": true_residual(full_pool.reshape(len(pool), -1), full_target, ref),
                        "accuracy": accuracy(ref), "picks": len(ref)})
        for dim in args.dims:
            for seed in args.seeds:
                atoms = projected(full_pool, dim, seed)
                # the target as GTP reads it: the mean of the stored (float16) target rows
                tgt = projected(target_grads, dim, seed).astype(np.float64).mean(axis=0)
                picked = pursuit(atoms, tgt, k).indices
                records.append({
                    "budget": budget, "dim": dim, "seed": seed,
                    "overlap": len(np.intersect1d(picked, ref)) / max(1, len(ref)),
                    "residual": true_residual(full_pool.reshape(len(pool), -1), full_target,
                                              picked),
                    "accuracy": accuracy(picked), "picks": len(picked)})
            print(f"budget {budget} dim {dim} done", flush=True)
    frame = pd.DataFrame(records)
    table = frame.groupby(["budget", "dim"], sort=False)[
        ["overlap", "residual", "accuracy", "picks"]].mean().round(3)
    print(table.to_markdown())


def weights(args) -> None:
    pool, target, test = splits(args.scenario)
    work = Path(args.work_dir)
    px, ex = input_matrix(pool, work / "embeddings"), input_matrix(test, work / "embeddings")
    n_classes = int(max(pool.labels.max(), test.labels.max(), target.labels.max())) + 1
    records = []
    for seed in args.seeds:
        base = GradientSettings()
        settings = GradientSettings(base.proxy, replace(base.warmup, seed=seed),
                                    replace(base.datastore, seed=seed))
        for budget in args.budgets:
            selection, _ = run_selection(pool, target, make_selector("gtp"), budget, work,
                                         settings)
            rows = selection.indices
            for use in (False, True):
                result = evaluate_subset(px[rows], pool.labels[rows], ex, test.labels,
                                         n_classes, EvalConfig(seeds=(seed,), use_weights=use),
                                         selection.weights)
                records.append({"budget": budget, "seed": seed,
                                "weights": "pursuit" if use else "uniform",
                                "accuracy": result.mean,
                                "n_pursuit": selection.info["n_pursuit"]})
        print(f"seed {seed} done", flush=True)
    frame = pd.DataFrame(records)
    table = frame.pivot_table(index="budget", columns="weights", values="accuracy",
                              aggfunc=["mean", "std"]).round(3)
    print(table.to_markdown())
    paired = frame.pivot_table(index=["budget", "seed"], columns="weights", values="accuracy")
    diff = (paired["pursuit"] - paired["uniform"]).groupby("budget").agg(["mean", "min", "max"])
    print("\npursuit-weighted minus uniform accuracy, per budget over seeds:")
    print(diff.round(3).to_markdown())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=("projection", "weights"))
    p.add_argument("--scenario", default="targeted-text", choices=sorted(SIZES))
    p.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dims", type=int, nargs="+", default=[32, 128, 512, 2048, 8192])
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.work_dir = args.work_dir or tmp
        if args.experiment == "projection":
            projection(args)
        else:
            weights(args)


if __name__ == "__main__":
    main()
