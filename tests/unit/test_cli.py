"""Every `xraylib` command run through ``cli.main`` in a temporary project, checked by its effects on disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from PIL import Image

from xraylib import cli, config, synthetic

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the repository these tests belong to


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A minimal copy of the project (dvc.yaml, params.yaml, profiles/, notebooks/) that is the working directory.

    ``synthesize.image_size`` is 32 so generated data stays tiny.
    """
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(SOURCE_ROOT / name, root / name)
    for name in ("profiles", "notebooks"):
        shutil.copytree(SOURCE_ROOT / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["synthesize"]["image_size"] = 32
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.delenv(config.PROJECT_ENV, raising=False)
    monkeypatch.chdir(root)
    assert config.PROJECT_ROOT == root  # found from the working directory, not from the installed package
    return root


def _count_pngs(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.png"))


def test_synthesize_writes_the_default_number_of_patients(project, capsys):
    assert cli.main(["synthesize", "--out", "raw"]) == 0  # --out is relative to the working directory
    out = capsys.readouterr().out
    printed = {task: (int(n), int(p)) for task, n, p in
               re.findall(r"synthetic (\w+): (\d+) images of (\d+) patients -> (?:\S+)", out)}
    assert set(printed) == {"binary", "multiclass"}
    binary, multiclass = project / "raw" / "chest_xray", project / "raw" / "COVID-19_Radiography_Dataset"
    on_disk = {
        "binary": {label: sum(_count_pngs(binary / split / label) for split in ("train", "test"))
                   for label in synthetic.CLASSES["binary"]},
        "multiclass": {label: _count_pngs(multiclass / label / "images") for label in synthetic.CLASSES["multiclass"]},
    }
    for task, (n_images, n_patients) in printed.items():
        scale = yaml.safe_load((project / "params.yaml").read_text())["synthesize"]["patients_scale"][task]
        expected_patients = {label: round(n * scale) for label, n in synthetic.DEFAULT_N_PATIENTS[task].items()}
        assert n_patients == sum(expected_patients.values())
        assert n_images == sum(on_disk[task].values())
        for label, count in expected_patients.items():  # 1 to 3 images per patient (the default)
            assert count <= on_disk[task][label] <= 3 * count, (task, label)
    patients = {p.name.split("_")[0] for p in (project / "raw" / "chest_xray").glob("*/NORMAL/*.png")}
    scale = yaml.safe_load((project / "params.yaml").read_text())["synthesize"]["patients_scale"]["binary"]
    assert len(patients) == round(synthetic.DEFAULT_N_PATIENTS["binary"]["NORMAL"] * scale)
    first = next((project / "raw" / "chest_xray" / "train" / "PNEUMONIA").glob("*.png"))
    with Image.open(first) as img:
        assert img.size == (32, 32)  # synthesize.image_size from params.yaml
    assert not (project / "data").exists(), "--out must replace the default folder, not add to it"


def _flatten(node: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_exp_dry_run_prints_every_profile_key(project, capsys, monkeypatch):
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: pytest.fail("--dry-run must not run dvc"))
    profile = _flatten(yaml.safe_load((project / "profiles" / "kermany_cpu.yaml").read_text()))
    assert cli.main(["exp", "kermany_cpu", "--dry-run"]) == 0
    command = capsys.readouterr().out.strip()
    head, *settings = command.split(" -S ")
    assert head == "dvc exp run"
    printed = dict(setting.split("=", 1) for setting in settings)
    assert {key: yaml.safe_load(value) for key, value in printed.items()} == profile
    # Extra dvc arguments go after `--`, wherever the options stand.
    for argv in (["exp", "--dry-run", "kermany_cpu", "--", "--temp"], ["exp", "kermany_cpu", "--dry-run", "--", "--temp"]):
        assert cli.main(argv) == 0
        assert capsys.readouterr().out.strip() == command.replace("dvc exp run", "dvc exp run --temp", 1)
    with pytest.raises(SystemExit):
        cli.main(["prepare", "binary", "--", "--temp"])
    assert "only for `xraylib exp`" in capsys.readouterr().err


def test_a_profiles_runs_replace_the_runs_of_params_yaml(project, capsys, tmp_path):
    """`-S train_multiclass.runs={...}` would merge into the six runs (one DVC stage each); xraylib exp deletes them
    first. Checked with DVC's own override code on a copy of params.yaml."""
    from dvc.utils.hydra import apply_overrides

    assert cli.main(["exp", "kermany3_cpu", "--dry-run"]) == 0
    command = capsys.readouterr().out.strip()
    head, *settings = command.split(" -S ")
    assert settings.index("~train_multiclass.runs") + 1 == settings.index(
        next(s for s in settings if s.startswith("+train_multiclass.runs=")))
    params = tmp_path / "params.yaml"
    params.write_text((project / "params.yaml").read_text())
    apply_overrides(str(params), settings)
    runs = yaml.safe_load(params.read_text())["train_multiclass"]["runs"]
    assert runs == yaml.safe_load((project / "profiles" / "kermany3_cpu.yaml").read_text())["train_multiclass"]["runs"]
    assert list(runs) == ["resnet18"]


@pytest.mark.parametrize("profile", sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "profiles").glob("*.yaml")))
def test_every_profile_setting_parses_as_dvc_exp_run_reads_it(profile):
    """`dvc exp run -S` reads values with Hydra's override grammar (quoted mapping keys are refused there)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    root = Path(__file__).resolve().parents[2]
    parser = OverridesParser.create()
    for key, value in _flatten(yaml.safe_load((root / "profiles" / f"{profile}.yaml").read_text())).items():
        parsed = parser.parse_overrides([f"{key}={cli.override_value(value)}"])[0].value()
        assert parsed == value, (profile, key)


def test_exp_names_a_stale_profile_key(project, capsys):
    (project / "profiles" / "stale.yaml").write_text("train_binary:\n  no_such_knob: 3\n")
    assert cli.main(["exp", "stale", "--dry-run"]) == 2
    assert "train_binary.no_such_knob" in capsys.readouterr().err


def test_profile_and_set_override_params_for_any_command_and_are_validated(project, capsys, monkeypatch):
    seen = {}

    def record(args) -> int:  # a command that only reads its parameters
        seen["params"] = cli.load_params(args)
        return 0

    monkeypatch.setattr(cli, "cmd_summary", record)  # the parser is built by main, after this
    assert cli.main(["--profile", "kermany_cpu", "--set", "train_binary.epochs=3", "--set", "seed=7", "summary"]) == 0
    profile = _flatten(yaml.safe_load((project / "profiles" / "kermany_cpu.yaml").read_text()))
    params = _flatten(seen["params"])
    assert {k: params[k] for k in profile} == {**profile, "train_binary.epochs": 3}  # --set wins over the profile
    assert params["seed"] == 7
    for bad, words in ((["--set", "train_binary.epochz=3"], "train_binary.epochs"),
                       (["--set", "train_binary.epochs=-1"], "train_binary.epochs"),
                       (["--set", "seed"], "expected key=value"),
                       (["--profile", "nope"], "profile 'nope' not found")):
        assert cli.main([*bad, "summary"]) == 2, bad
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (bad, err)


def test_install_kernel_writes_a_spec_without_fd_capture(tmp_path, capsys):
    prefix = tmp_path / "prefix"
    assert cli.main(["install-kernel", "--name", "test", "--prefix", str(prefix)]) == 0
    spec_file = prefix / "share" / "jupyter" / "kernels" / "test" / "kernel.json"
    assert str(spec_file.parent) in capsys.readouterr().out
    spec = json.loads(spec_file.read_text())
    assert set(cli.KERNEL_FLAGS) <= set(spec["argv"])
    assert spec["argv"][0] == sys.executable and spec["display_name"] == "Python (test)"
    assert spec["env"]["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert cli.main(["install-kernel", "--name", "test", "--prefix", str(prefix)]) == 0  # again: flag not doubled
    argv = json.loads(spec_file.read_text())["argv"]
    assert all(argv.count(flag) == 1 for flag in cli.KERNEL_FLAGS)


def test_model_cards_from_metrics_files(project, capsys):
    metrics = project / "reports" / "metrics"
    metrics.mkdir(parents=True)
    point = {"threshold": 0.37, "accuracy": 0.81, "f1": 0.82, "precision": 0.83, "sensitivity": 0.84,
             "specificity": 0.85}
    (metrics / "binary.json").write_text(json.dumps({
        "model": {"backbone": "small_cnn"}, "threshold": {"youden_val": 0.37},
        "test": {"n": 40, "roc_auc": 0.9123, "roc_auc_ci": [0.8, 0.95], "youden_val": point}}))
    per_class = {"A": {"precision": 0.11, "recall": 0.12, "f1": 0.13, "specificity": 0.14, "support": 5},
                 "B": {"precision": 0.21, "recall": 0.22, "f1": 0.23, "specificity": 0.24, "support": 7}}
    (metrics / "multiclass.json").write_text(json.dumps({"runs": {"resnet18": {
        "arch": "resnet18", "best_epoch": 2, "test": {"n": 12, "macro_f1": 0.5, "macro_f1_ci": [0.3, 0.7],
                                                        "per_class": per_class}}}}))
    (metrics / "data_binary.json").write_text(json.dumps({"synthetic": True, "classes": ["N", "P"]}))
    (metrics / "data_multiclass.json").write_text(json.dumps({"synthetic": False, "classes": ["A", "B"]}))
    assert cli.main(["model-cards"]) == 0
    assert capsys.readouterr().out.split() == ["wrote", "reports/model_cards/binary.md",
                                               "wrote", "reports/model_cards/resnet18.md"]
    binary = (project / "reports" / "model_cards" / "binary.md").read_text()
    # columns: threshold, sensitivity, specificity, precision, accuracy, F1
    assert "| youden_val | 0.370 | 0.840 | 0.850 | 0.830 | 0.810 | 0.820 |" in binary
    assert "| ROC AUC | 0.912 (95 % CI 0.800-0.950) |" in binary
    assert "SYNTHETIC" in binary
    resnet = (project / "reports" / "model_cards" / "resnet18.md").read_text()
    # columns: support, precision, recall, F1, specificity
    assert "| A | 5 | 0.110 | 0.120 | 0.130 | 0.140 |" in resnet
    assert "| B | 7 | 0.210 | 0.220 | 0.230 | 0.240 |" in resnet
    assert "SYNTHETIC" not in resnet and "| macro F1 | 0.500 (95 % CI 0.300-0.700) |" in resnet
    assert not (project / "models").exists()  # nothing written beside weights without --next-to-weights


def _executed_copy(project: Path, error_in: str | None = None) -> dict[str, str]:
    """Write reports/notebooks/01_explore.ipynb as papermill would, one known output per code cell.

    Returns ``{cell id: its output text}``. An injected-parameters cell is added after the
    parameters cell, so matching cells by position instead of id would go wrong.
    """
    nb = nbformat.read(project / "notebooks" / "01_explore.ipynb", as_version=4)
    texts = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            texts[cell.id] = f"output of {cell.id}\n"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=texts[cell.id])]
            cell.execution_count = len(texts)
            cell.metadata["papermill"] = {"status": "completed"}
            if cell.id == error_in:
                cell.outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[]))
    position = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell("samples_per_class = 2\n", id="injected1")
    injected.metadata["tags"] = ["injected-parameters"]
    injected.outputs = [nbformat.v4.new_output("stream", name="stdout", text="injected\n")]
    nb.cells.insert(position + 1, injected)
    nb.metadata["papermill"] = {"parameters": {"samples_per_class": 2}}
    target = project / "reports" / "notebooks" / "01_explore.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return texts


def test_sync_outputs_copies_by_cell_id(project, capsys):
    before = nbformat.read(project / "notebooks" / "01_explore.ipynb", as_version=4)
    texts = _executed_copy(project)
    assert cli.main(["sync-outputs", "explore"]) == 0
    assert "updated outputs of notebooks/01_explore.ipynb" in capsys.readouterr().out
    after = nbformat.read(project / "notebooks" / "01_explore.ipynb", as_version=4)
    assert [c.id for c in after.cells] == [c.id for c in before.cells]  # no injected cell comes along
    assert [c.source for c in after.cells] == [c.source for c in before.cells]  # the committed parameters stay
    for cell in after.cells:
        if cell.cell_type == "code":
            assert [o["text"] for o in cell.outputs] == [texts[cell.id]], cell.id
            assert "papermill" not in cell.metadata
    assert "papermill" not in after.metadata


def test_sync_outputs_refuses_a_notebook_with_an_error(project, capsys):
    committed = (project / "notebooks" / "01_explore.ipynb").read_bytes()
    broken = [c.id for c in nbformat.read(project / "notebooks" / "01_explore.ipynb", as_version=4).cells
              if c.cell_type == "code"][2]
    _executed_copy(project, error_in=broken)
    assert cli.main(["sync-outputs", "explore"]) == 2
    err = capsys.readouterr().err
    assert "has errors in cells" in err and broken in err
    assert (project / "notebooks" / "01_explore.ipynb").read_bytes() == committed
    assert cli.main(["sync-outputs", "no_such_stage"]) == 2
    assert "unknown notebook stage" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_explore_runs_on_fresh_synthetic_data(project, capsys, monkeypatch):
    """The whole path a new user takes: synthesize, prepare both tasks, execute notebook 01 with the kernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "xraylib" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("Jupyter kernel 'xraylib' is not installed (`make env` / `xraylib install-kernel` registers it)")
    assert cli.main(["synthesize"]) == 0
    for task in config.TASKS:
        assert cli.main(["prepare", task]) == 0
    capsys.readouterr()
    # `xraylib notebook` exports the project to the kernel through the environment; keep it to this test.
    monkeypatch.setenv(config.PROJECT_ENV, str(project))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(cli, "_exit_with_caller", lambda: None)  # no watcher thread left in the pytest process
    assert cli.main(["notebook", "explore", "--quiet"]) == 0
    assert "executed 01_explore.ipynb -> reports/notebooks/01_explore.ipynb" in capsys.readouterr().out
    executed = nbformat.read(project / "reports" / "notebooks" / "01_explore.ipynb", as_version=4)
    errors = [c.id for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    inline = sum("image/png" in o.get("data", {}) for o in outputs)
    saved = len(list((project / "reports" / "figures" / "explore").glob("*.png")))
    assert inline == saved == 6, "every figure the notebook saves is shown in it"
    assert not [o for o in outputs if o.get("name") == "stderr"], "no warnings in the executed notebook"
    written = json.loads((project / "reports" / "metrics" / "explore.json").read_text())
    summary = {task: json.loads((project / "data" / "processed" / task / "summary.json").read_text())
               for task in config.TASKS}
    for task in config.TASKS:  # the notebook read this project's data, not the repository's
        assert written[task]["images"] == summary[task]["images"]
        scale = yaml.safe_load((project / "params.yaml").read_text())["synthesize"]["patients_scale"][task]
        assert written[task]["patients"] == summary[task]["patients"] == sum(
            round(n * scale) for n in synthetic.DEFAULT_N_PATIENTS[task].values())
    figures = sorted(p.name for p in (project / "reports" / "figures" / "explore").glob("*.png"))
    assert "binary_samples.png" in figures and "multiclass_samples.png" in figures
    samples = np.asarray(Image.open(project / "reports" / "figures" / "explore" / "binary_samples.png"))
    assert samples.std() > 0


def test_version_names_the_package_and_the_project(capsys):
    import xraylib

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"xraylib {xraylib.__version__} (project: ") and str(config.project_root()) in out
