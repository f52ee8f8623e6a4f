"""A non-editable install works, and command-line paths are taken from where the user stands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --no-deps .`` (a real wheel build, not editable) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-compile", "--target", str(target), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (target / "xraylib" / "cli.py").is_file()
    return target


def _run(args, cwd: Path, site: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XRAYLIB_PROJECT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site if site is not None else ROOT)  # the installed copy, or this checkout's
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_non_editable_install_runs_help_and_predict(installed, trained_checkpoint, tiny_root, tmp_path):
    elsewhere = tmp_path / "user"  # no project here or above: predict must not need one
    elsewhere.mkdir()
    shutil.copy(trained_checkpoint, elsewhere / "model.pt")
    shutil.copytree(tiny_root / "test", elsewhere / "images")
    where = _run(["-c", "import xraylib, sys; print(xraylib.__file__)"], elsewhere, installed)
    assert where.stdout.strip().startswith(str(installed)), where.stdout + where.stderr
    helped = _run(["-m", "xraylib", "--help"], elsewhere, installed)
    assert helped.returncode == 0 and "predict" in helped.stdout and "regression" in helped.stdout
    done = _run(["-m", "xraylib", "predict", "model.pt", "images", "--output", "out/pred.csv"], elsewhere, installed)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(elsewhere / "out" / "pred.csv")
    assert len(table) == sum(1 for _ in (tiny_root / "test").rglob("*.png"))
    assert "-> out/pred.csv" in done.stdout


def test_relative_paths_are_relative_to_the_working_directory(trained_checkpoint, tiny_root, tmp_path):
    """--output and --out land in the folder the user stands in, never at the project root."""
    sub = tmp_path / "somewhere"
    sub.mkdir()
    shutil.copy(trained_checkpoint, sub / "m.pt")
    shutil.copy(next((tiny_root / "test" / "VIRUS").glob("*.png")), sub / "x.png")
    done = _run(["-m", "xraylib", "predict", "m.pt", "x.png", "--output", "p.csv"], sub)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (sub / "p.csv").is_file() and not (ROOT / "p.csv").exists()
    evaluated = _run(["-m", "xraylib", "evaluate", "m.pt", str(tiny_root / "test"), "--out", "ev"], sub)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert any((sub / "ev").iterdir()) and not (ROOT / "ev").exists()


def test_project_commands_outside_a_project_say_where_to_go(tmp_path):
    done = _run(["-m", "xraylib", "prepare", "binary"], tmp_path)
    assert done.returncode == 2
    assert "no xraylib project found from" in done.stderr and "XRAYLIB_PROJECT" in done.stderr
    assert "Traceback" not in done.stderr
