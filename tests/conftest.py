"""Shared fixtures: every test writes under tmp_path; nothing touches the network or $HOME."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Resources built at import time (``pipelines.definitions``' ``ArtifactStore()``) read
    CURATION_HOME before any ``home`` fixture sets it; give them a session directory, not the
    project's ``.curation`` (which ``make test`` exports), so no test writes there."""
    config.curation_default_home = tempfile.mkdtemp(prefix="curation-test-home-")
    os.environ["CURATION_HOME"] = config.curation_default_home


def pytest_unconfigure(config: pytest.Config) -> None:
    home = getattr(config, "curation_default_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def embeddings_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MiniLM embeddings cache for the whole session.

    ``curation.embed`` caches by content hash in ``<work dir>/embeddings``, and every
    ``home`` has a fresh work dir: without this, each test re-embeds the same documents.
    """
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="session", autouse=True)
def _shared_embeddings_in_process(embeddings_cache: Path) -> Iterator[None]:
    """In this process every embedding goes through the session's cache, whatever work dir
    the caller passed (an ArtifactStore root, ``tmp_path / "work"``...). The cache is keyed by
    model, settings and the texts themselves, so sharing it changes no result. Session-scoped
    and autouse, so session fixtures that materialize text scenarios share it too."""
    import curation.embed as embed

    original = embed.embed_texts

    def embed_texts(texts, *, cache_dir=None, **kwargs):
        return original(texts, cache_dir=embeddings_cache, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embed, "embed_texts", embed_texts)
        yield


def share_embeddings(curation_home: Path, cache: Path) -> None:
    """Point ``curation_home/work/embeddings`` (the CLI's and ArtifactStore's default work
    dir) at the session's cache; everything else in the work dir stays per test."""
    link = curation_home / "work" / "embeddings"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(cache, target_is_directory=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embeddings_cache: Path) -> Path:
    """A fresh CURATION_HOME and DAGSTER_HOME (telemetry off) for one test; embeddings come
    from the session's shared cache."""
    curation_home = tmp_path / "curation_home"
    share_embeddings(curation_home, embeddings_cache)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("CURATION_HOME", str(curation_home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    return tmp_path


@pytest.fixture(scope="session")
def digits_splits(tmp_path_factory: pytest.TempPathFactory):
    """A small real scenario (scikit-learn 8x8 digits): pool 400, target 30."""
    from curation.demo_data import ScenarioConfig, write_scenario

    return write_scenario(ScenarioConfig("digits", pool_size=400, target_size=30, test_size=300),
                          tmp_path_factory.mktemp("digits"))


def tiny_run_config(scenario: str = "digits", methods=("random", "less", "el2n", "gtp")) -> dict:
    """Run config for the whole asset graph on tiny real data (seconds, not minutes)."""
    sizes = {"digits": (300, 20, 200), "targeted-text": (200, 16, 120)}[scenario]
    dims = {"dim": 64, "shard_size": 128}
    return {"ops": {
        "splits": {"config": {"scenario": scenario, "pool_size": sizes[0],
                              "target_size": sizes[1], "test_size": sizes[2]}},
        "warmup_proxy": {"config": {"kind": "mlp" if scenario == "digits" else "linear",
                                    "hidden": 32, "fraction": 0.1}},
        "gradient_datastore": {"config": dims},
        "target_gradients": {"config": dims},
        "scored_subsets": {"config": {"methods": list(methods), "budgets": [0.05, 0.1],
                                      "random_seeds": [0, 1]}},
        "benchmark_report": {"config": {"methods": ["random", "gtp"], "budgets": [0.1],
                                        "seeds": [0], "dim": 64}},
    }}


def init_dvc_repo(path: Path, remote: Path | None = None) -> Path:
    """``git init`` + ``dvc init`` in ``path``, with ``remote`` as the default DVC remote."""
    from dvc.repo import Repo

    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    with Repo.init(str(path)) as repo:
        if remote is not None:
            with repo.config.edit() as config:
                config["remote"]["local"] = {"url": str(remote)}
                config["core"]["remote"] = "local"
    return path
