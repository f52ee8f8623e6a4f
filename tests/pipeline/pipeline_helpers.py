"""Helpers for pipeline tests: a throw-away git + DVC copy of this project, and a way to run commands in it.

These tests run ``dvc`` and the notebook stages for real (on tiny settings), so
they take minutes; they never touch the workspace they were started from.
"""

from __future__ import annotations

import os
import subprocess
import sys
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

