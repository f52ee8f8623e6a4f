"""dvc.lock is true for the committed code: no stage's code, notebook, parameters or command changed since it ran.

On a fresh clone the data and model outputs do not exist yet (DVC reports them
"deleted"); that is expected and not a stale lock. What must never land is a
lock whose recorded dependencies (modules, notebooks, params) or commands differ
from the committed files: then `dvc repro` was not re-run after a change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).parent / "dvc"


def stale_entries(status: dict, outputs: set[str]) -> list[str]:
    """What in ``dvc status --json`` means the lock is stale (not merely outputs missing)."""
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed", ...
                problems.append(f"{stage}: {change}")
                continue
            for path, state in (change.get("changed deps") or {}).items():
                if isinstance(state, dict):  # params.yaml: {key: modified}
                    problems += [f"{stage}: parameter {key} {how}" for key, how in state.items()]
                elif not (state == "deleted" and any(path == o or path.startswith(o + "/") or o.startswith(path + "/")
                                                     for o in outputs)):  # an output, inside one, or holding some
                    problems.append(f"{stage}: dependency {path} {state}")
    return problems


def test_stale_entries_reads_dvc_status():
    status = {"train_binary": [{"changed deps": {"xraylib/tf_train.py": "modified", "data/processed/binary": "deleted",
                                                 "params.yaml": {"train_binary.epochs": "modified"}}},
                               {"changed outs": {"models/binary": "deleted"}}, "changed command"]}
    assert stale_entries(status, {"data/processed/binary", "models/binary"}) == [
        "train_binary: dependency xraylib/tf_train.py modified",
        "train_binary: parameter train_binary.epochs modified", "train_binary: changed command"]
    assert stale_entries({"explore": [{"changed outs": {"reports/figures/explore": "deleted"}}]}, set()) == []
    # a stage that depends on a folder of other stages' outputs (models/multiclass: one folder per run's stage)
    status = {"gradcam": [{"changed deps": {"models/multiclass": "deleted", "models/other": "deleted"}}]}
    assert stale_entries(status, {"models/multiclass/resnet18"}) == ["gradcam: dependency models/other deleted"]


@pytest.mark.skipif(not (ROOT / ".git").exists() or not DVC.exists(), reason="needs a git checkout and dvc")
def test_dvc_lock_matches_the_committed_code():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:  # the stages as DVC resolves them: foreach stages (train_run@<run>) expanded
        outputs = {out.def_path for stage in repo.index.stages for out in stage.outs}
    done = subprocess.run([str(DVC), "status", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    problems = stale_entries(json.loads(done.stdout or "{}"), outputs)
    assert not problems, ("dvc.lock does not match the committed code; run `dvc repro` and commit dvc.lock:\n"
                          + "\n".join(problems))
