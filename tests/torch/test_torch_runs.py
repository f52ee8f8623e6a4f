"""One multi-class run per DVC stage (xraylib.torch_runs): what a run's stage writes, and that the study notebook
reads it back unchanged instead of training again."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.torch.helpers import run_config
from xraylib import outputs, torch_evaluate, torch_runs

STUDY = torch_runs.Evaluation(batch_size=8, n_resamples=20, recalibration="temperature", seeds=1, seed=0)


def _as_written(document: dict) -> dict:
    """A document as JSON holds it (NaN as null, tuples as lists), full precision."""
    return json.loads(json.dumps(outputs.to_json_safe(document, None)))


def _config(name: str = "tiny", **overrides):
    settings = dict(epochs=2, batch_size=6, image_size=32, num_workers=0, learning_rate=0.001, seed=3)
    return run_config(name, "squeezenet", **{**settings, **overrides})


@pytest.fixture(scope="module")
def finished(tiny_manifest, tmp_path_factory):
    """One run done as its stage does it: models/<run>/ and metrics/multiclass_runs/<run>.json in a scratch folder."""
    root = tmp_path_factory.mktemp("runs")
    cfg = _config()
    outcome = torch_runs.run(cfg, tiny_manifest, root / "models", STUDY, checkpoint_dir=root / "ckpt",
                             data_source="synthetic", synthetic=True, metrics_dir=root / "metrics")
    return root, cfg, outcome


def test_a_run_writes_its_model_folder_and_its_metrics(finished, tiny_manifest):
    root, cfg, outcome = finished
    run_dir = root / "models" / cfg.name
    assert {p.name for p in run_dir.iterdir()} == {"best.pt", "history.csv", "calibration.json",
                                                   torch_runs.PREDICTIONS, torch_runs.DOCUMENT, "README.md"}
    document = json.loads((run_dir / torch_runs.DOCUMENT).read_text())
    assert list(document["runs"]) == [cfg.name] and document["synthetic"] is True
    n_test = (tiny_manifest["split"] == "test").sum()
    assert document["runs"][cfg.name]["test"]["n"] == len(outcome.predictions) == n_test
    assert "calibration" in document["runs"][cfg.name]["test"]
    assert document["provenance"] == torch_runs.provenance(cfg, tiny_manifest, STUDY)
    card = (run_dir / "README.md").read_text()
    assert cfg.name in card and "squeezenet" in card
    # the headline DVC shows: one flat row, each test figure with its interval, rounded as every metrics file
    row = json.loads(torch_runs.metrics_path(cfg.name, root / "metrics").read_text())
    test = document["runs"][cfg.name]["test"]
    assert set(row) == {"acc", "f1", "f1_lo", "f1_hi", "auc", "auc_lo", "auc_hi", "synthetic", "train_s"}
    assert row["acc"] == round(test["accuracy"], 4) and [row["f1_lo"], row["f1_hi"]] == [
        round(x, 4) for x in test["macro_f1_ci"]]
    assert all(not isinstance(v, (dict, list)) for v in row.values()) and row["train_s"] >= 0


def test_the_study_reads_a_finished_run_back_exactly(finished, tiny_manifest, capsys):
    root, cfg, outcome = finished
    stamp = (root / "models" / cfg.name / "best.pt").stat().st_mtime_ns
    capsys.readouterr()
    loaded = torch_runs.ensure_all([cfg], tiny_manifest, root / "models", STUDY, checkpoint_dir=root / "ckpt",
                                   metrics_dir=root / "metrics")[cfg.name]
    assert "running it here" not in capsys.readouterr().out
    assert (root / "models" / cfg.name / "best.pt").stat().st_mtime_ns == stamp, "nothing is trained again"
    assert loaded.entry == _as_written(outcome.entry)
    pd.testing.assert_frame_equal(loaded.predictions, outcome.predictions, check_exact=True)
    # multiclass.json from the files equals the one from the run in memory, bit for bit
    assert torch_evaluate.study_metrics({cfg.name: loaded.entry}, loaded.classes, synthetic=True) == _as_written(
        torch_evaluate.study_metrics({cfg.name: outcome.entry}, outcome.classes, synthetic=True))
    assert loaded.report["class_names"] == outcome.classes
    assert loaded.report["confusion_matrix"] == outcome.entry["test"]["confusion_matrix"]


def test_a_reloaded_run_keeps_its_training_time(finished, tiny_manifest):
    """DVC re-runs a run's stage when only its evaluation changed: the run is reloaded, not retrained, and the
    headline still reports the time its epochs took (kept in last.pt), not the reload's."""
    root, cfg, first = finished
    again = torch_runs.run(cfg, tiny_manifest, root / "models", STUDY, checkpoint_dir=root / "ckpt",
                           synthetic=True, metrics_dir=root / "metrics")
    assert again.timing["epochs_trained"] == 0 and again.timing["train_seconds"] < first.timing["train_seconds"]
    assert again.timing["train_seconds_total"] == first.timing["train_seconds_total"] > 0
    row = json.loads(torch_runs.metrics_path(cfg.name, root / "metrics").read_text())
    assert row["train_s"] == round(first.timing["train_seconds_total"], 4)
    assert _as_written(again.entry) == _as_written(first.entry)  # (NaN != NaN in memory)


def test_a_setting_that_changes_only_speed_keeps_the_run(finished, tiny_manifest):
    root, cfg, _ = finished
    faster = _config(image_cache_mb=cfg.image_cache_mb + 1)  # train_multiclass.image_cache_mb: same bits
    assert torch_runs.load(faster, tiny_manifest, root / "models", STUDY, metrics_dir=root / "metrics") is not None


@pytest.mark.parametrize("change", ["run", "evaluation", "data", "code", "missing"])
def test_a_stale_or_missing_run_is_not_reused(finished, tiny_manifest, change, monkeypatch):
    root, cfg, _ = finished
    manifest, study, models = tiny_manifest, STUDY, root / "models"
    if change == "run":
        cfg = _config(learning_rate=0.002)
    elif change == "code":  # the stage would re-run; a notebook opened on its own must not reuse the old run
        monkeypatch.setattr(torch_runs.torch_train, "code_fingerprint", lambda: "other training code")
    elif change == "evaluation":
        study = torch_runs.Evaluation(**{**STUDY.__dict__, "n_resamples": 30})
    elif change == "data":
        manifest = tiny_manifest.assign(split=tiny_manifest["split"].replace({"test": "val"}))
    else:
        models = root / "elsewhere"
    assert torch_runs.load(cfg, manifest, models, study, metrics_dir=root / "metrics") is None


def test_the_notebook_runs_what_no_stage_ran(tiny_manifest, tmp_path, capsys):
    cfg = _config("other")
    study = torch_runs.Evaluation(**{**STUDY.__dict__, "seeds": 2, "recalibration": "none"})
    outcomes = torch_runs.ensure_all([cfg], tiny_manifest, tmp_path / "models", study, checkpoint_dir=tmp_path / "c",
                                     synthetic=True, metrics_dir=tmp_path / "metrics")
    assert "other: no finished run with these settings" in capsys.readouterr().out
    entry = outcomes["other"].entry
    assert entry["seeds"]["macro_f1"]["n"] == 2 and "calibration" not in entry["test"]
    assert (tmp_path / "models" / "other" / "seed4" / "best.pt").is_file()
    assert torch_runs.load(cfg, tiny_manifest, tmp_path / "models", study, metrics_dir=tmp_path / "metrics")
