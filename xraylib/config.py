"""Project paths and parameters.

Every path is built from the package location, so notebooks run by papermill
from any working directory find the same files (cookiecutter-data-science
style). ``params.yaml`` at the project root is the single source of parameter
values; notebooks receive them as papermill parameters and scripts read them
with :func:`load_params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = PROJECT_ROOT / "params.yaml"

DATA_DIR = PROJECT_ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
SYNTHETIC_DIR = RAW_DIR / "synthetic"
PROCESSED_DIR = DATA_DIR / "processed"
MODELS_DIR = PROJECT_ROOT / "models"
REPORTS_DIR = PROJECT_ROOT / "reports"
FIGURES_DIR = REPORTS_DIR / "figures"
METRICS_DIR = REPORTS_DIR / "metrics"
PLOTS_DIR = REPORTS_DIR / "plots"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"

# Real data for development lives beside the repository on development and CI
# machines only; a user's fresh clone does not have it.
SHARED_DIR = PROJECT_ROOT.parent / "shared"

TASKS = ("binary", "multiclass")


def resolve(path: str | Path) -> Path:
    """Return ``path`` as an absolute path; relative paths are taken from the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p)


def relative_to_project(path: str | Path) -> str:
    """Return ``path`` relative to the project root when inside it, else absolute (posix)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return p.as_posix()


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read ``params.yaml`` (or another YAML file) into a dict.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} not found; expected params.yaml at the project root")
    with path.open() as fh:
        params = yaml.safe_load(fh)
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a YAML mapping of parameters, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], dotted: str) -> Any:
    """Return ``params['a']['b']`` for ``dotted='a.b'`` with a clear error when a key is missing."""
    node: Any = params
    walked = []
    for key in dotted.split("."):
        walked.append(key)
        if not isinstance(node, dict) or key not in node:
            have = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"parameter '{'.'.join(walked)}' is missing from params.yaml (found: {have})")
        node = node[key]
    return node


def ensure_dirs(*dirs: Path) -> None:
    """Create output folders (figures, metrics, ...) if they do not exist yet."""
    for d in dirs:
        Path(d).mkdir(parents=True, exist_ok=True)


def shared_path(*parts: str) -> Path | None:
    """Return a path under ``../shared`` if it exists, else ``None`` (fresh user machines)."""
    p = SHARED_DIR.joinpath(*parts)
    return p if p.exists() else None
