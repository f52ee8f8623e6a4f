"""Helpers for pipeline tests: a throw-away git + DVC copy of this project, and a way to run commands in it.

These tests run ``dvc`` and the notebook stages for real (on tiny settings), so
they take minutes; they never touch the workspace they were started from.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from xraylib import regression

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Small settings so that every stage up to train_multiclass runs in about a minute.
TINY = {
    "synthesize": {"image_size": 48},
    "explore": {"samples_per_class": 2},
    "preprocess": {"image_size": 48},
    "train_binary": {"image_size": 32, "epochs": 2, "n_bootstrap": 20},
    "train_multiclass": {"image_size": 32, "epochs": 3, "num_workers": 0, "num_threads": 1, "n_resamples": 20,
                         "runs": {"resnet18": {"arch": "resnet18", "step_lr": False}}},
    "gradcam": {"max_per_class": 3},
}


def env_for(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XRAYLIB_PROJECT", "PYTHONPATH")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "DVC_NO_ANALYTICS": "1",
                "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"})
    return env


def run(project: Path, *command: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(command), cwd=project, env=env_for(project), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-4000:]}")
    return done


def make_git_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the working tree to ``dest``, apply tiny settings, and commit it as a fresh git repository."""
    regression.copy_project(ROOT, dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in {**TINY, **(overrides or {})}.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-q", "-m", "test project")
    run(dest, "dvc", "config", "--local", "core.analytics", "false")
    return dest


def tracked_state(project: Path) -> dict[str, bytes]:
    """Every file of the work tree except git's and DVC's own folders (to prove a run left it untouched)."""
    state = {}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".dvc/")):
            state[rel] = path.read_bytes()
    return state



def start_queue_workers(project: Path, jobs: int, log: Path) -> None:
    """``dvc queue start --jobs N``, its output going to ``log``.

    The workers are forked from that command and keep its stdout and stderr open, so reading them through a pipe
    would wait for the last worker to exit, and a worker may never exit on its own: with the filesystem broker of
    dvc-task, a shutdown meant for one worker can be taken by another (treeverse/dvc#10427), and the first then
    idles for good after its experiment has finished. Follow the queue with ``dvc queue status`` instead, and end
    the workers with :func:`stop_queue_workers`.
    """
    with open(log, "ab") as out:
        done = subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=project, env=env_for(project),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"dvc queue start exited {done.returncode}: {log.read_text()[-4000:]}")


def queue_worker_pids(project: Path) -> list[int]:
    """The live processes of this project's queue workers (dvc-task records each one's pid in a JSON file)."""
    pids = []
    for info in sorted((project / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json")):
        pid = json.loads(info.read_text()).get("pid")
        try:  # the pid may have been reused since: check that it is still a queue worker
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, TypeError):
            continue
        if b"queue-worker" in command:
            pids.append(pid)
    return pids


def stop_queue_workers(project: Path, grace: float = 30) -> list[int]:
    """``dvc queue stop``, then a kill for each worker still alive after ``grace`` seconds; returns their pids."""
    run(project, "dvc", "queue", "stop", check=False, timeout=120)
    deadline = time.monotonic() + grace
    while (left := queue_worker_pids(project)) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in left:
        try:  # dvc-task starts each worker in a process group of its own, with its helpers
            group = os.getpgid(pid)
            if group == os.getpgrp():  # never the test's own group
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def run_queue(project: Path, jobs: int, timeout: float = 1500) -> tuple[str, list[str]]:
    """Run the queued experiments with ``jobs`` workers until none is queued or running, or ``timeout`` seconds.

    Returns the last ``dvc queue status`` and what was done about dvc-task's known races: another
    ``dvc queue start`` when every worker has gone with a task still queued (its idle monitor can end a worker
    early, treeverse/dvc#10562; the remedy a user would use), and a kill for each worker left behind at the end.
    """
    log = project.parent / f"{project.name}-queue-start.log"
    handled, restarts, idle = [], 0, 0
    try:
        start_queue_workers(project, jobs, log)
        deadline = time.monotonic() + timeout
        while True:
            status = run(project, "dvc", "queue", "status").stdout
            if not re.search(r"\b(Queued|Running)\b", status) or time.monotonic() > deadline:
                break
            # two looks 10 s apart, so that workers just started have written their pid files
            idle = idle + 1 if "Queued" in status and not queue_worker_pids(project) else 0
            if idle == 2 and restarts < 2:
                idle, restarts = 0, restarts + 1
                handled.append("every worker gone with a task queued: dvc queue start again")
                start_queue_workers(project, jobs, log)
            time.sleep(10)
    finally:
        if stuck := stop_queue_workers(project):
            handled.append(f"{len(stuck)} worker(s) left running after dvc queue stop: killed")
    return status, handled
