"""Pipeline tests run dvc and the notebook stages for real on tiny settings (minutes); see pipeline_helpers."""

from __future__ import annotations

import pytest
from pipeline_helpers import make_git_project


@pytest.fixture
def git_project(tmp_path):
    return make_git_project(tmp_path / "project")
