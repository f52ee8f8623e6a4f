"""The regression comparison runs on a finished scratch run (``xraylib regression`` makes one)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--regression-dir", default=None,
                     help="scratch project of a finished `xraylib regression` run (default build/regression)")


@pytest.fixture(scope="session")
def regression_dir(request) -> Path:
    root = Path(__file__).resolve().parents[2]
    folder = Path(request.config.getoption("--regression-dir") or root / "build" / "regression")
    if not (folder / "reports" / "metrics").is_dir():
        pytest.skip(f"no finished regression run in {folder}: run `xraylib regression` (make test does)")
    return folder
