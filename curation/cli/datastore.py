"""``curation datastore build | info | verify``: gradient datastores from the command line.

Registered on the main app in ``curation.cli``; errors go through its ``user_errors`` (one
line, exit status 2). Heavy imports happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.cli.common import console, user_errors, work_directory
from curation.cli.options import config_options
from curation.datastore import DatastoreSpec, parse_params

datastore_app = typer.Typer(help="Build, inspect and verify gradient datastores.",
                            no_args_is_help=True)

@datastore_app.command("build")
@config_options(DatastoreSpec, "spec", parsers={"params": parse_params}, helps={
    "kind": "Pool features: sgd (plain gradients) or adam (LESS).",
    "seed": "Seed of the proxy warm-up and the projection."})
def build(
    pool: Annotated[Path, typer.Option(help="Pool: Parquet, datasets directory, json/csv.")],
    out: Annotated[Path, typer.Option(help="Store directory (the target store goes to OUT/target).")],
    target: Annotated[Path | None, typer.Option(help="Target set: also store its (sgd) features.")]
    = None,
    checkpoints: Annotated[int, typer.Option(help="Proxy checkpoints (trajectory length).")] = 4,
    proxy: Annotated[str, typer.Option(help="Proxy kind: linear or mlp.")] = "linear",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler address (e.g. tcp://host:8786): compute shards on its workers, "
             "which must share OUT and the work directory.")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Cache for embeddings and proxies.")]
    = None,
    spec: DatastoreSpec = DatastoreSpec(),  # noqa: B008 - frozen; the options below build it
) -> None:
    """Train (or reuse) the proxy on POOL, then build or resume its gradient datastore in OUT."""
    from dataclasses import replace

    from curation.datastore import build_datastore, check_scheduler
    from curation.embed import input_matrix
    from curation.io import check_output_dir
    from curation.pool import load_pool
    from curation.proxies.classifier import ProxySpec, WarmupConfig
    from curation.workflow import GradientSettings, cached_proxy, n_classes_of

    with user_errors():
        settings = GradientSettings(ProxySpec(proxy), WarmupConfig(
            epochs=max(4, checkpoints), checkpoints=checkpoints, seed=spec.seed), spec)
        check_output_dir(out, "--out")
        cache = work_directory(work_dir)
        if scheduler is not None:
            check_scheduler(scheduler)
        pool_data = load_pool(pool, role="pool")
        target_data = (load_pool(target, role="target", pool=pool_data)
                       if target is not None else None)
        pool_x = input_matrix(pool_data, cache / "embeddings", progress=True)
        trained = cached_proxy(cache, pool_data.content_hash, pool_x, pool_data.labels,
                               n_classes_of(*[p for p in (pool_data, target_data) if p is not None]),
                               settings)
        stores = {"pool": build_datastore(trained, pool_x, pool_data.labels, pool_data.ids, out,
                                          spec, pool_data.content_hash, True, scheduler)}
        if target_data is not None:
            target_x = input_matrix(target_data, cache / "embeddings", progress=True)
            stores["target"] = build_datastore(
                trained, target_x, target_data.labels, target_data.ids, out / "target",
                replace(spec, kind="sgd"), target_data.content_hash, True, scheduler)
    console.print(f"proxy  {trained.spec.kind}, {len(trained.checkpoints)} checkpoints "
                  f"-> {trained.checkpoints[0].model_path.parent}")
    for role, store in stores.items():
        report = store.report
        rate = report.examples_per_second
        console.print(
            f"{role:6s} {store.n} x {store.checkpoints} x {store.dim} {store.manifest['dtype']} "
            f"({store.manifest['feature_kind']}), {len(report.computed)} shards computed, "
            f"{len(report.reused)} reused" + (f", {rate:,.0f} examples/s" if rate else "")
            + f" -> {store.directory}")


@datastore_app.command("info")
def info(directory: Annotated[Path, typer.Argument(help="Datastore directory.")]) -> None:
    """Print the manifest summary of a datastore (and of its target store, if any)."""
    from curation.datastore import read_manifest

    with user_errors():
        manifests = {"pool": read_manifest(directory)}
        if (directory / "target" / "manifest.json").exists():
            manifests["target"] = read_manifest(directory / "target")
    for role, manifest in manifests.items():
        path = directory if role == "pool" else directory / "target"
        console.print(_summary(role, path, manifest))


@datastore_app.command("verify")
def verify(directory: Annotated[Path, typer.Argument(help="Datastore directory.")]) -> None:
    """Check every shard against the manifest's sha256; exit 2 naming any bad shard."""
    from curation.datastore import verify_datastore
    from curation.errors import CurationError

    with user_errors():
        directories = [directory] + ([directory / "target"]
                                     if (directory / "target" / "manifest.json").exists() else [])
        problems = [p for d in directories for p in verify_datastore(d)]
        if problems:
            raise CurationError("; ".join(problems))
    console.print(f"ok: every shard matches its manifest ({', '.join(map(str, directories))})")


def _summary(role: str, directory: Path, manifest: dict):
    from rich.table import Table

    projection = manifest["projection"]
    shards = manifest["shards"]
    present = [s for s in shards if (directory / s["file"]).exists()]
    size = sum((directory / s["file"]).stat().st_size for s in present)
    n, checkpoints, dim = manifest["shape"]
    lrs = ", ".join(f"{lr:g}" for lr in manifest["checkpoint_lrs"])
    table = Table(title=f"{role} datastore {manifest['datastore_id']}  {directory}",
                  show_header=False, title_justify="left")
    for key, value in [
        ("shape", f"{n} examples x {checkpoints} checkpoints x {dim} dims, {manifest['dtype']}"),
        ("features", f"{manifest['feature_kind']} of {manifest['n_params']:,} parameters "
                     f"({manifest['params'] if isinstance(manifest['params'], str) else 'named'}: "
                     f"{', '.join(manifest['param_names'])})"),
        ("projection", f"{projection['kind']}, seed {projection['seed']}, scale "
                       f"{projection['scale']}" + (", rows L2-normalized"
                                                   if manifest["normalize"] else "")),
        ("checkpoints", f"{checkpoints} (learning rates {lrs}); sha256 "
                        + ", ".join(c[:12] for c in manifest["proxy_checkpoints"])),
        ("shards", f"{len(shards)} of up to {manifest['shard_size']} rows, {len(present)} present, "
                   f"{size / 2**20:,.1f} MiB on disk"),
        ("pool id", manifest["pool_id"]),
    ]:
        table.add_row(key, value)
    return table
