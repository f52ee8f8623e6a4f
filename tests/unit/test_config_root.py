"""The project is found from the working directory (or $XRAYLIB_PROJECT), never from the package location."""

from __future__ import annotations

from pathlib import Path

import pytest

from xraylib import config


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    (folder / "params.yaml").write_text("seed: 1\n")
    return folder


def test_root_is_the_nearest_project_above_the_working_directory(tmp_path, monkeypatch):
    outer = _project(tmp_path / "outer")
    inner = _project(outer / "sub" / "inner")
    (inner / "notebooks").mkdir()
    monkeypatch.delenv(config.PROJECT_ENV, raising=False)
    monkeypatch.chdir(inner / "notebooks")
    assert config.PROJECT_ROOT == inner.resolve()
    assert config.MODELS_DIR == inner.resolve() / "models"
    assert config.load_params(validate=False) == {"seed": 1}
    monkeypatch.chdir(outer / "sub")
    assert config.PROJECT_ROOT == outer.resolve()
    assert config.resolve("data/x.csv") == outer.resolve() / "data" / "x.csv"


def test_environment_variable_wins_and_is_checked(tmp_path, monkeypatch):
    chosen = _project(tmp_path / "chosen")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config.PROJECT_ENV, str(chosen))
    assert config.PROJECT_ROOT == chosen.resolve()
    monkeypatch.setenv(config.PROJECT_ENV, str(tmp_path / "nothing_here"))
    with pytest.raises(config.ProjectNotFoundError, match="is not an xraylib project"):
        config.project_root()


def test_outside_a_project_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(config.PROJECT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(config.ProjectNotFoundError, match="cd into the repository or set XRAYLIB_PROJECT"):
        config.PROJECT_ROOT
    assert config.find_project_root() is None
    assert config.user_path("a/b.csv") == tmp_path / "a" / "b.csv"
    assert config.resolve("/abs/path.png") == Path("/abs/path.png")  # absolute paths need no project


def test_shared_folder_of_a_dvc_temporary_workspace_is_the_main_repositorys(tmp_path, monkeypatch):
    main = _project(tmp_path / "main")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    temp = _project(main / ".dvc" / "tmp" / "exps" / "tmp123")
    monkeypatch.delenv(config.PROJECT_ENV, raising=False)
    monkeypatch.delenv(config.SHARED_ENV, raising=False)
    monkeypatch.chdir(temp)
    assert config.shared_dir() == tmp_path / "shared"
    assert config.resolve("../shared/data") == tmp_path / "shared" / "data"
    monkeypatch.chdir(main)
    assert config.resolve("../shared/data") == main / ".." / "shared" / "data"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NO_SUCH_DIR"):
        config.NO_SUCH_DIR  # noqa: B018


def test_every_entry_point_validates_the_params(tmp_path, monkeypatch, capsys):
    """A typo'd key stops the command with one line naming the dotted key and the closest valid key."""
    import yaml

    from xraylib import cli

    root = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_binary"]["epoch"] = params["train_binary"].pop("epochs")
    project = _project(tmp_path / "p")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.delenv(config.PROJECT_ENV, raising=False)
    monkeypatch.chdir(project)
    with pytest.raises(ValueError, match=r"train_binary\.epoch: unknown key; did you mean 'epochs'\?"):
        config.load_params()
    assert cli.main(["prepare", "binary"]) == 2
    err = capsys.readouterr().err
    assert "xraylib prepare: error: params.yaml: 1 problem" in err and "did you mean 'epochs'" in err
    assert "Traceback" not in err
