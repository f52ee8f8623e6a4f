"""The regression suite: re-run the study in a scratch copy and compare it with committed references.

What is compared, and how:

* **exactly** — outputs that are exactly determined by the code and the seed:
  the data-stage summaries, the exploration and split tables
  (``reports/metrics/{data_binary,data_multiclass,explore,preprocess}.json``), and
  the text of every notebook cell that prints them (``pytest --nbval``);
* **within tolerances** — figures that come out of floating-point training
  (AUC, accuracy, macro-F1, Grad-CAM scores), which differ in the last bits
  between CPUs, thread counts and oneDNN settings and then diverge: the
  headline figures of the run are compared with ``tests/regression/reference.json``
  within the tolerances of ``tests/regression/tolerances.yaml``, which were
  derived from the spread measured across numeric paths (see that file).
  Notebook cells that print such figures carry the ``nbval-ignore-output`` tag.

The run never touches the workspace's tracked outputs: the working tree is
copied into a scratch folder (``build/regression`` by default) without
``data/``, ``models/``, ``reports/`` and caches, the data stages and the
notebooks run there from scratch, and only then are the results compared.
``--numerics alt`` runs it under a different numeric path (oneDNN off, other
thread counts) than the default one the reference was recorded with, so that a
pass shows the tolerances hold, not just that one machine repeats itself.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from xraylib import config

REFERENCE_FILE = Path("tests/regression/reference.json")
TOLERANCES_FILE = Path("tests/regression/tolerances.yaml")
EXACT_METRICS = ("data_binary", "data_multiclass", "explore", "preprocess")
SKIPPED_IN_COPY = {".git", ".venv", ".dvc/cache", ".dvc/tmp", "data", "models", "reports", ".cache", "build",
                   "runs", "tmp", ".pytest_cache"}
# Committed inputs under a skipped folder: benchmark records are read by notebook 03 (its variant table), not written.
KEPT_IN_COPY = ("reports/benchmarks/",)
NUMERICS = {
    # The path the reference is recorded with: oneDNN on (TF's default on x86-64), TensorFlow's default
    # thread count, torch threads as configured (train_multiclass.num_threads).
    "default": {},
    # Another numeric path: oneDNN off, one TensorFlow thread, one torch thread (the study's default: two).
    "alt": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1", "XRAYLIB_NUM_THREADS": "1"},
    # Thread counts alone changed (oneDNN as by default).
    "threads": {"TF_NUM_INTRAOP_THREADS": "1", "XRAYLIB_NUM_THREADS": "1"},
}


def headline(metrics_dir: str | Path) -> dict[str, float | None]:
    """The training figures the regression compares, flattened to ``{dotted name: value}``.

    Binary: test ROC-AUC, average precision and accuracy/sensitivity/specificity at
    the validation-chosen threshold, validation ROC-AUC. Multi-class: per run test
    accuracy, macro-F1 and macro AUC. Grad-CAM: per model pointing game and share
    of the map inside the lungs.
    """
    folder = Path(metrics_dir)

    def read(name: str) -> dict:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the run did not write its metrics")
        return json.loads(path.read_text())

    values: dict[str, float | None] = {}
    binary = read("binary")
    for key in ("roc_auc", "average_precision"):
        values[f"binary.test.{key}"] = binary["test"][key]
    for key in ("accuracy", "sensitivity", "specificity"):
        values[f"binary.test.youden_val.{key}"] = binary["test"]["youden_val"][key]
    values["binary.val.roc_auc"] = binary["val"]["roc_auc"]
    for run, result in read("multiclass")["runs"].items():
        for key in ("accuracy", "macro_f1", "macro_auc_ovr"):
            values[f"multiclass.{run}.test.{key}"] = result["test"][key]
    for model, result in read("gradcam")["models"].items():
        for key in ("pointing_game", "lung_energy"):
            values[f"gradcam.{model}.{key}"] = result["overall"].get(key)
    return values


def exact_outputs(metrics_dir: str | Path) -> dict[str, dict]:
    """The exactly determined metrics files, by name."""
    folder = Path(metrics_dir)
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in EXACT_METRICS}


def load_tolerances(path: str | Path) -> dict[str, float | None]:
    """``{pattern: tolerance}`` from the tolerances YAML (``fnmatch`` patterns over headline names).

    A tolerance of ``null`` means: reported, not compared (a figure measured to be unstable across paths).
    """
    spec = yaml.safe_load(Path(path).read_text()) or {}
    tolerances = spec.get("tolerances")
    if not isinstance(tolerances, dict) or not tolerances:
        raise ValueError(f"{path}: expected a mapping 'tolerances: {{pattern: absolute tolerance}}'")
    for pattern, value in tolerances.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{path}: tolerance of {pattern!r} must be a number >= 0 or null, got {value!r}")
    return {str(k): None if v is None else float(v) for k, v in tolerances.items()}


def tolerance_for(name: str, tolerances: dict[str, float | None]) -> float | None:
    """The tolerance of the first pattern that matches ``name`` (patterns are tried in file order)."""
    for pattern, value in tolerances.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    raise KeyError(f"no tolerance pattern matches {name!r}; add one to {TOLERANCES_FILE}")


def compare(run: dict[str, float | None], reference: dict[str, float | None],
            tolerances: dict[str, float | None]) -> list[str]:
    """Every way ``run`` differs from ``reference`` beyond tolerance, one line each (empty when it passes).

    A figure that is ``None``/NaN in one and not the other, and a figure that is
    missing on either side, count as differences.
    """
    problems = []
    for name in sorted(set(run) | set(reference)):
        if name not in run:
            problems.append(f"{name}: in the reference ({reference[name]}) but not written by the run")
            continue
        if name not in reference:
            problems.append(f"{name}: written by the run ({run[name]}) but not in the reference; "
                            "update the reference if the new figure is intended")
            continue
        got, want = run[name], reference[name]
        got_nan = got is None or (isinstance(got, float) and math.isnan(got))
        want_nan = want is None or (isinstance(want, float) and math.isnan(want))
        if got_nan or want_nan:
            if got_nan != want_nan:
                problems.append(f"{name}: {got} vs reference {want}")
            continue
        tol = tolerance_for(name, tolerances)
        if tol is None:  # measured unstable across numeric paths: reported by the caller, not compared
            continue
        if abs(got - want) > tol + 1e-12:
            problems.append(f"{name}: {got:.4f} vs reference {want:.4f} (difference {got - want:+.4f}, "
                            f"tolerance {tol:.3f})")
    return problems


def compare_exact(run: dict[str, dict], reference: dict[str, dict]) -> list[str]:
    """Names of exactly determined files whose content differs, with the first differing key."""
    problems = []
    for name in sorted(set(run) | set(reference)):
        a, b = run.get(name), reference.get(name)
        if a != b:
            problems.append(f"{name}.json: {_first_difference(a, b)}")
    return problems


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
    return f"{prefix or '(whole file)'}: {a!r} vs reference {b!r}"


def copy_project(source: Path, dest: Path) -> list[str]:
    """Copy the working tree (tracked and untracked-not-ignored files) into ``dest``, without outputs.

    Committed inputs inside output folders (:data:`KEPT_IN_COPY`: the benchmark records) are copied.

    Uses ``git ls-files`` when ``source`` is a git work tree, else copies every
    file outside :data:`SKIPPED_IN_COPY`. Returns the copied relative paths.
    """
    source, dest = Path(source).resolve(), Path(dest).resolve()
    if dest == source or source in dest.parents and not str(dest.relative_to(source)).startswith("build"):
        raise ValueError(f"scratch folder {dest} must lie outside the project or under its build/ folder")
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=source, capture_output=True, check=True).stdout.decode().split("\0")
        files = [f for f in listed if f]
    except (OSError, subprocess.CalledProcessError):
        files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]

    def skipped(rel: str) -> bool:
        if rel.startswith(KEPT_IN_COPY):
            return False
        parts = rel.split("/")
        return any("/".join(parts[:i]) in SKIPPED_IN_COPY for i in range(1, len(parts)))

    if dest.exists():
        shutil.rmtree(dest)
    copied = []
    for rel in files:
        path = source / rel
        if skipped(rel) or not path.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(rel)
    return copied


def scratch_env(scratch: Path, numerics: str) -> dict[str, str]:
    """Environment for commands in the scratch project: its own root, its own copy of the package first."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {sorted(NUMERICS)}, got {numerics!r}")
    env = {k: v for k, v in os.environ.items() if k not in ("XRAYLIB_PROJECT", "PYTHONPATH")}
    env.update({config.PROJECT_ENV: str(scratch), "PYTHONPATH": str(scratch), "PYTHONHASHSEED": "0",
                "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    shared = config.shared_dir()
    if shared.is_dir():
        env.setdefault(config.SHARED_ENV, str(shared))
    env.update(NUMERICS[numerics])
    return env


def run_study(scratch: Path, numerics: str = "alt", *, notebooks: bool = True) -> int:
    """Data stages, then ``pytest --nbval`` over the notebooks (which executes them in order), in ``scratch``."""
    env = scratch_env(scratch, numerics)
    python = sys.executable
    steps = [[python, "-m", "xraylib", "synthesize"], [python, "-m", "xraylib", "prepare", "binary"],
             [python, "-m", "xraylib", "prepare", "multiclass"]]
    if notebooks:
        steps.append([python, "-m", "pytest", "--nbval", "notebooks", "--nbval-sanitize-with",
                      "tests/nbval_sanitize.cfg", "-p", "no:cacheprovider"])
    for step in steps:
        print(f"[regression:{numerics}] $ {' '.join(Path(step[0]).name if i == 0 else a for i, a in enumerate(step))}",
              flush=True)
        code = subprocess.call(step, cwd=scratch, env=env)
        if code:
            return code
    from xraylib import numerics as numeric_path

    record = Path(scratch) / "reports" / "metrics" / "environment.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"regression": numeric_path.describe(
        {"numerics": numerics, "numerics_env": NUMERICS[numerics]})}, indent=2) + "\n")
    return 0


def check(scratch: Path, reference_file: Path, tolerances_file: Path, *, training: bool = True) -> list[str]:
    """Compare a finished scratch run with the reference; returns the problems (empty = pass).

    ``training=False`` compares the exactly determined data outputs only (a run without notebooks).
    """
    reference = json.loads(Path(reference_file).read_text())
    metrics_dir = Path(scratch) / "reports" / "metrics"
    if training:
        exact = exact_outputs(metrics_dir)
        problems = compare_exact(exact, reference["exact"])
        problems += compare(headline(metrics_dir), reference["headline"], load_tolerances(tolerances_file))
        return problems
    names = [n for n in EXACT_METRICS if n.startswith("data_")]
    return compare_exact({n: json.loads((metrics_dir / f"{n}.json").read_text()) for n in names},
                         {n: reference["exact"][n] for n in names})


def write_reference(scratch: Path, reference_file: Path, numerics: str) -> Path:
    """Record the scratch run's figures as the new reference (after an intended change)."""
    from xraylib import numerics as numeric_path

    metrics_dir = Path(scratch) / "reports" / "metrics"
    document = {
        "recorded_with": {"numerics": numerics, **numeric_path.describe({"numerics_env": dict(NUMERICS[numerics])})},
        "exact": exact_outputs(metrics_dir),
        "headline": headline(metrics_dir),
    }
    reference_file = Path(reference_file)
    reference_file.parent.mkdir(parents=True, exist_ok=True)
    reference_file.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return reference_file
