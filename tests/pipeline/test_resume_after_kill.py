"""Killing `dvc repro` during training ends the whole stage, and the re-run resumes to the same result."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from pipeline_helpers import env_for, make_git_project, run

pytestmark = pytest.mark.slow


def processes_in(folder: Path) -> list[str]:
    """Command lines of live processes whose working directory lies in ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(str(folder) + os.sep):
            found.append(f"{pid}: {cmdline.strip()}")
    return found


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc (Linux)")
def test_kill_dvc_repro_mid_training_then_resume(tmp_path):
    full = make_git_project(tmp_path / "full")
    cut = make_git_project(tmp_path / "cut")
    for project in (full, cut):
        run(project, "dvc", "repro", "prepare_multiclass")
    run(full, "dvc", "repro", "train_multiclass")

    last = cut / ".cache" / "checkpoints" / "multiclass" / "resnet18" / "last.pt"
    log = (tmp_path / "cut.log").open("w")
    dvc = subprocess.Popen(["dvc", "repro", "train_multiclass"], cwd=cut, env=env_for(cut), stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not last.is_file():
        assert dvc.poll() is None, f"dvc repro ended before the first epoch:\n{(tmp_path / 'cut.log').read_text()}"
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.2)
    dvc.kill()  # SIGKILL to dvc alone, as a crash or `kill -9 <dvc pid>` would
    dvc.wait()
    deadline = time.monotonic() + 30
    while processes_in(cut) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_in(cut), f"stage processes outlived dvc: {processes_in(cut)}"
    assert not (cut / "reports" / "metrics" / "multiclass.json").exists()

    done = run(cut, "dvc", "repro", "train_multiclass")
    output = done.stdout + done.stderr
    match = re.search(r"resnet18: resuming after epoch (\d) from \.cache/checkpoints/multiclass/resnet18/last\.pt",
                      output)
    assert match and int(match.group(1)) in (1, 2), output[:4000]
    for name in ("reports/metrics/multiclass.json", "models/multiclass/resnet18/best.pt",
                 "models/multiclass/resnet18/history.csv"):
        assert (cut / name).read_bytes() == (full / name).read_bytes(), f"{name} differs from the uninterrupted run"
