"""The pipeline runs in DVC's temporary and queued experiment workspaces and leaves the main workspace alone."""

from __future__ import annotations

import json

import pytest

from pipeline_helpers import run, tracked_state

pytestmark = pytest.mark.slow


def test_exp_run_temp_leaves_the_workspace_untouched(git_project):
    before = tracked_state(git_project)
    done = run(git_project, "dvc", "exp", "run", "--temp", "-n", "fewer-samples",
               "-S", "explore.samples_per_class=3", "explore")
    assert "fewer-samples" in done.stdout + done.stderr
    assert tracked_state(git_project) == before, "dvc exp run --temp wrote into the workspace"
    assert not (git_project / "data").exists() and not (git_project / "reports" / "metrics" / "explore.json").exists()
    shown = json.loads(run(git_project, "dvc", "exp", "show", "--json").stdout)
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    names = {exp.get("name") for exp in experiments}
    assert "fewer-samples" in names, names
    params = [rev["data"]["params"]["params.yaml"]["data"]["explore"]["samples_per_class"]
              for exp in experiments if exp.get("name") == "fewer-samples" for rev in exp["revs"]]
    assert params == [3]


def test_queued_experiments_run_in_workers_and_both_land(git_project):
    for n in (2, 4):
        run(git_project, "dvc", "exp", "run", "--queue", "-n", f"samples-{n}", "-S",
            f"explore.samples_per_class={n}", "explore")
    before = tracked_state(git_project)
    run(git_project, "dvc", "queue", "start", "--jobs", "1")
    run(git_project, "dvc", "queue", "logs", "samples-4", "--follow", timeout=1200, check=False)
    status = run(git_project, "dvc", "queue", "status").stdout
    assert "Success" in status and "Failed" not in status, status
    shown = json.loads(run(git_project, "dvc", "exp", "show", "--json").stdout)
    names = {exp.get("name") for commit in shown for exp in (commit.get("experiments") or [])}
    assert {"samples-2", "samples-4"} <= names, names
    assert tracked_state(git_project) == before, "queued experiments wrote into the workspace"
    run(git_project, "dvc", "queue", "stop", check=False)
