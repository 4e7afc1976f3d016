"""Fault injection for ``test_killed_runs``: run CLI commands in real processes and SIGKILL
them at stage markers.

Usage: ``python -m tests.e2e.kill_harness PLAN.json RESULTS.json``. The harness imports the CLI
once and forks one child per ``run`` step (importing torch and the CLI takes seconds, a tiny
run far less, so forking keeps the suite fast; the parent runs no torch op before forking, so
no thread pool is forked half-initialized). A stage marker is a rename: every artifact is
written to a temp file and renamed onto its name, so the child patches ``os.replace`` and
sends itself SIGKILL just ``before`` or ``after`` the ``nth`` rename onto a path matching the
glob ``path``. Nothing of this is in the library: the kills are real, the code under test is
the shipped code.

Plan steps: ``{"run": [args], "env": {...}, "kill": {"path", "when", "nth"} | null}``,
``{"copy": [src, dst]}``, ``{"remove": path}``. For each run the results hold its signal or
exit status and every file under ``list`` (a directory) afterwards.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path


def main(plan_path: str, results_path: str) -> None:
    import torch._dynamo  # noqa: F401 - the first torch.optim optimizer imports it: ~10 s
    from numba.core.registry import cpu_target

    import curation.cli  # noqa: F401 - imported once, before forking
    import curation.datastore.build  # noqa: F401 - the commands import these lazily
    import curation.distill  # noqa: F401
    import curation.selection  # noqa: F401
    import curation.workflow  # noqa: F401

    # Loading the first cached Numba kernel imports its registries (seconds); do it once
    # here. It compiles and runs nothing, so no Numba thread pool exists before the forks.
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()

    results = []
    for step in json.loads(Path(plan_path).read_text()):
        if "copy" in step:
            shutil.copytree(*step["copy"])
        elif "remove" in step:
            shutil.rmtree(step["remove"], ignore_errors=True)
        else:
            results.append(_run(step))
    Path(results_path).write_text(json.dumps(results))


def _run(step: dict) -> dict:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(step)
    _, status = os.waitpid(pid, 0)
    listed = Path(step["list"])
    return {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "seconds": round(time.monotonic() - start, 2),
            "files": sorted(str(p.relative_to(listed)) for p in listed.rglob("*") if p.is_file())}


def _child(step: dict) -> None:
    code = 1
    try:
        os.environ.update(step.get("env", {}))
        if step.get("kill"):
            _kill_at(**step["kill"])
        from curation.cli import app

        app(args=step["run"], prog_name="curation")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _kill_at(path: str, when: str = "before", nth: int = 1) -> None:
    real_replace = os.replace
    hits = [0]

    def replace(src, dst, *args, **kwargs):
        hit = fnmatch.fnmatch(str(dst), path)
        hits[0] += hit
        if hit and hits[0] == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if hit and hits[0] == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


if __name__ == "__main__":
    main(*sys.argv[1:3])
