"""Project paths and parameters.

The project is found the way git and DVC find theirs: the environment variable
``XRAYLIB_PROJECT`` when set, else the nearest folder upwards from the current
working directory that holds ``dvc.yaml`` and ``params.yaml``. It is never taken
from where the package is installed, so the same installed code serves the main
workspace, a DVC temporary experiment workspace (``dvc exp run --temp`` /
``--queue``), a scratch copy made by the regression suite, or a non-editable
install. Paths are computed on each access (``config.PROJECT_ROOT``,
``config.MODELS_DIR``, ...), so a process that changes directory follows.

``params.yaml`` at the project root is the single source of parameter values;
notebooks receive them as papermill parameters and scripts read them with
:func:`load_params`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ENV = "XRAYLIB_PROJECT"
SHARED_ENV = "XRAYLIB_SHARED"
REPORTS_ENV = "XRAYLIB_REPORTS"  # set: reports/ (figures, metrics, plots, notebooks) is this folder instead
MARKERS = ("dvc.yaml", "params.yaml")
TASKS = ("binary", "multiclass")

# Folders below the project root, by attribute name (config.DATA_DIR etc.).
_LAYOUT = {
    "PARAMS_FILE": "params.yaml",
    "DATA_DIR": "data",
    "RAW_DIR": "data/raw",
    "SYNTHETIC_DIR": "data/raw/synthetic",
    "PROCESSED_DIR": "data/processed",
    "MODELS_DIR": "models",
    "REPORTS_DIR": "reports",
    "FIGURES_DIR": "reports/figures",
    "METRICS_DIR": "reports/metrics",
    "PLOTS_DIR": "reports/plots",
    "NOTEBOOKS_DIR": "notebooks",
    "PROFILES_DIR": "profiles",
    "CACHE_DIR": ".cache",
}


class ProjectNotFoundError(FileNotFoundError):
    """Raised when no project (dvc.yaml + params.yaml) is found from the working directory."""


@lru_cache(maxsize=64)
def _find_root(start: str, env: str | None) -> Path:
    if env:
        root = Path(env).expanduser().resolve()
        if not all((root / m).is_file() for m in MARKERS):
            raise ProjectNotFoundError(f"{PROJECT_ENV}={env!r} is not an xraylib project: expected "
                                       f"{' and '.join(MARKERS)} in {root}")
        return root
    here = Path(start)
    for folder in (here, *here.parents):
        if all((folder / m).is_file() for m in MARKERS):
            return folder
    raise ProjectNotFoundError(f"no xraylib project found from {here}: expected {' and '.join(MARKERS)} in this "
                               f"folder or one above it; cd into the repository or set {PROJECT_ENV}=/path/to/it")


def project_root() -> Path:
    """The project folder: ``$XRAYLIB_PROJECT``, else the nearest ``dvc.yaml`` + ``params.yaml`` upwards from cwd.

    Raises:
        ProjectNotFoundError: outside a project (``xraylib predict``/``evaluate`` do not need one).
    """
    return _find_root(os.getcwd(), os.environ.get(PROJECT_ENV) or None)


def find_project_root() -> Path | None:
    """Like :func:`project_root`, but ``None`` outside a project."""
    try:
        return project_root()
    except ProjectNotFoundError:
        return None


def shared_dir() -> Path:
    """Real data for development, beside the repository (``../shared``) on development and CI machines only.

    ``$XRAYLIB_SHARED`` wins. A DVC temporary workspace lives inside the main
    repository (``<repo>/.dvc/tmp/exps/...``), so ``shared`` beside that repository
    is used there too. A user's fresh machine has none: callers check ``exists()``.
    """
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env).expanduser().resolve()
    root = find_project_root() or Path.cwd()
    candidates = [root.parent / "shared"]
    parts = root.parts
    if ".dvc" in parts:  # dvc exp run --temp / --queue workspace
        main = Path(*parts[:parts.index(".dvc")])
        candidates.append(main.parent / "shared")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def __getattr__(name: str) -> Path:
    """``config.PROJECT_ROOT``, ``config.MODELS_DIR``, ...: computed from the current project on each access."""
    if name == "PROJECT_ROOT":
        return project_root()
    if name == "SHARED_DIR":
        return shared_dir()
    if name in _LAYOUT:
        first, *rest = _LAYOUT[name].split("/")
        if first == "reports" and os.environ.get(REPORTS_ENV):
            return Path(os.environ[REPORTS_ENV]).absolute().joinpath(*rest)
        return project_root() / _LAYOUT[name]
    raise AttributeError(f"module 'xraylib.config' has no attribute {name!r}")


def resolve(path: str | Path) -> Path:
    """Return a project path as an absolute path; relative paths are taken from the project root.

    Use this for paths written in ``params.yaml`` and manifests. Paths a user
    types on the command line are relative to the working directory instead:
    use :func:`user_path`.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    local = project_root() / p
    if p.parts[:2] == ("..", "shared") and not local.exists():
        return shared_dir().joinpath(*p.parts[2:])  # profiles name ../shared; a DVC temp workspace has it elsewhere
    return local


def user_path(path: str | Path) -> Path:
    """A path given on the command line: relative to the current working directory, as the user expects."""
    return Path(path).expanduser().absolute()


def relative_to_project(path: str | Path) -> str:
    """Return ``path`` relative to the project root when inside it, else absolute (posix).

    Folders on the way are resolved, the last name is not: a link keeps its own name
    (also a broken or looping one, which cannot be resolved).
    """
    p = Path(path).absolute()
    p = p.parent.resolve() / p.name
    root = find_project_root()
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def load_params(path: str | Path | None = None, *, validate: bool = True) -> dict[str, Any]:
    """Read ``params.yaml`` (or another YAML file) into a dict, checked against :mod:`xraylib.schema`.

    Every entry point reads parameters through here, so a typo'd, missing, mistyped or
    out-of-range key stops the command with one line per problem, naming the dotted key.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a YAML mapping or breaks the schema (all problems listed).
    """
    path = Path(path) if path is not None else project_root() / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} not found; expected params.yaml at the project root")
    with path.open() as fh:
        try:
            params = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a YAML mapping of parameters, got {type(params).__name__}")
    if validate:
        from xraylib import schema

        schema.validate_params(params, source=path.name)
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
    p = shared_dir().joinpath(*parts)
    return p if p.exists() else None
