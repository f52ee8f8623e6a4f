"""Training: the six configured runs, checkpoints, and exact resumption after an interruption."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import pandas as pd
import pytest
import torch

from tests.torch.helpers import run_config, study_params
from xraylib import config, schema, torch_evaluate, torch_train
from xraylib.torch_train import RunConfig, build_configs, train


class Interrupted(Exception):
    """Stands in for a kill / power cut in the middle of an epoch."""


def stop_at(epoch: int, batch: int):
    def hook(current_epoch, index):
        if (current_epoch, index) == (epoch, batch):
            raise Interrupted(f"stopped in epoch {epoch} after batch {batch}")
    return hook


def _assert_same_weights(path_a, path_b):
    a = torch.load(path_a, weights_only=True)["model_state"]
    b = torch.load(path_b, weights_only=True)["model_state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_params_define_the_six_original_runs():
    configs = torch_train.configs_from_params(config.load_params())
    assert [(c.arch, c.step_lr) for c in configs] == [
        ("densenet121", False), ("densenet121", True), ("resnet18", False), ("resnet18", True),
        ("resnet50", False), ("squeezenet", False)]
    assert len({c.name for c in configs}) == 6
    assert {c.batch_size for c in configs} == {20}
    # The CPU demo trains from scratch at 1e-3 (SqueezeNet, which stops learning there, at 3e-4) ...
    assert {c.name: c.learning_rate for c in configs} == {
        "densenet121": 0.001, "densenet121_steplr": 0.001, "resnet18": 0.001, "resnet18_steplr": 0.001,
        "resnet50": 0.001, "squeezenet": 0.0003}
    # ... and the paper profile is the original's fine-tuning: Adam 1e-4 for all six runs, StepLR every 3 epochs.
    from xraylib import cli, schema

    paper = schema.apply_overrides(config.load_params(), cli.profile_overrides("paper_gpu"))
    original = torch_train.configs_from_params(paper)
    assert {c.learning_rate for c in original} == {0.0001} and {c.batch_size for c in original} == {20}
    assert {c.step_size for c in original if c.step_lr} == {3} and {c.epochs for c in original} == {25}


def test_build_configs_selects_and_validates():
    shared = torch_train.shared_settings(study_params())
    runs = {"a": {"arch": "resnet18", "step_lr": False}, "b": {"arch": "squeezenet", "step_lr": True}}
    assert [c.name for c in build_configs(runs, ["b"], **{**shared, "epochs": 2})] == ["b"]
    assert build_configs(runs, [], **{**shared, "epochs": 2})[1].step_lr is True
    assert [c.name for c in build_configs(runs, **shared)] == ["a", "b"]  # the name is the key
    with pytest.raises(ValueError, match=r"runs \['c'\] are not in train_multiclass.runs \['a', 'b'\]"):
        build_configs(runs, ["c"], **shared)
    with pytest.raises(ValueError, match="must be a mapping of run name -> settings"):
        build_configs([{"name": "a", "arch": "resnet18", "step_lr": False}], **shared)
    with pytest.raises(ValueError, match=r"runs\.x must be a mapping with 'arch' and 'step_lr'"):
        build_configs({"x": {"step_lr": False}}, **shared)
    with pytest.raises(ValueError, match=r"runs\.a\.name: unknown key"):  # the key names the run, nothing else
        build_configs({"a": {"name": "b", "arch": "resnet18", "step_lr": False}}, **shared)
    with pytest.raises(ValueError, match="write 0.0001, not 1e-4"):
        build_configs(runs, **{**shared, "learning_rate": "1e-4"})
    with pytest.raises(ValueError, match="architecture must be one of"):
        build_configs({"v": {"arch": "vgg16", "step_lr": False}}, **shared)


def test_configs_from_params_are_params_yaml_exactly():
    params = study_params()
    spec, data_spec = params["train_multiclass"], params["data"]
    configs = torch_train.configs_from_params(params)
    assert [c.name for c in configs] == list(spec["runs"])
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for cfg, (name, run) in zip(configs, spec["runs"].items()):
        expected = {**{k: v for k, v in spec.items() if k in fields}, "resize": data_spec["resize"],
                    "equalize": data_spec["equalize"], "seed": params["seed"], **run, "name": name}
        assert dataclasses.asdict(cfg) == expected
        assert {k: type(v) for k, v in dataclasses.asdict(cfg).items()} == {k: type(v) for k, v in expected.items()}
    # Every train_multiclass key is a run setting or a declared study key: none is dropped unseen.
    assert set(schema.section_keys("train_multiclass")) == (fields - {"name", "arch", "step_lr", "resize",
                                                                      "equalize", "seed"}) | set(torch_train.STUDY_KEYS)
    assert set(schema.section_keys("train_multiclass.runs")) <= fields
    # names select, in the order of runs (xraylib train-multiclass --only).
    assert [c.name for c in torch_train.configs_from_params(params, ["resnet18", "densenet121"])] == [
        "densenet121", "resnet18"]


def test_unknown_and_missing_settings_name_the_dotted_key():
    params = study_params()
    shared = torch_train.shared_settings(params)
    runs = params["train_multiclass"]["runs"]
    with pytest.raises(ValueError, match=r"^train_multiclass\.epoch: unknown key; did you mean 'epochs'\?$"):
        build_configs(runs, **{**shared, "epoch": 3})
    with pytest.raises(ValueError, match=r"train_multiclass\.optimizer: unknown key; valid keys: "):
        build_configs(runs, **{**shared, "optimizer": "sgd"})
    with pytest.raises(ValueError, match=r"train_multiclass\.runs\.b\.steplr: unknown key; did you mean 'step_lr'"):
        build_configs({**runs, "b": {"arch": "resnet18", "steplr": True}}, **shared)
    with pytest.raises(ValueError, match=r"train_multiclass\.runs\.a\.step_lr: missing"):
        build_configs({"a": {"arch": "resnet18"}}, **shared)
    without = {k: v for k, v in shared.items() if k not in ("gamma", "equalize", "seed")}
    with pytest.raises(ValueError) as info:
        build_configs(runs, **without)
    assert str(info.value).splitlines() == ["train_multiclass.gamma: missing (params.yaml must define it)",
                                            "data.equalize: missing (params.yaml must define it)",
                                            "seed: missing (params.yaml must define it)"]
    del params["train_multiclass"]["precise_bn"]
    with pytest.raises(ValueError, match=r"^train_multiclass\.precise_bn: missing"):
        torch_train.configs_from_params(params)
    with pytest.raises(TypeError):  # no second set of defaults: every field is required
        RunConfig(name="a", arch="resnet18")


@pytest.mark.parametrize("num_workers,weighted,step_lr", [(0, False, True), (2, True, False)])
def test_interrupted_run_resumes_to_the_same_result(tiny_manifest, tmp_path, num_workers, weighted, step_lr):
    cfg = run_config("resume", "squeezenet", epochs=3, batch_size=4, image_size=32, num_workers=num_workers,
                     weighted_sampler=weighted, step_lr=step_lr, step_size=1, learning_rate=0.0005, seed=5)
    full = train(cfg, tiny_manifest, tmp_path / "full", verbose=False)

    with pytest.raises(Interrupted):
        train(cfg, tiny_manifest, tmp_path / "cut", on_batch_end=stop_at(2, 2), verbose=False)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 1
    assert len(pd.read_csv(tmp_path / "cut" / "history.csv")) == 1

    resumed = train(cfg, tiny_manifest, tmp_path / "cut", verbose=False)
    assert resumed.resumed_from_epoch == 1
    pd.testing.assert_frame_equal(resumed.history, full.history)
    assert (resumed.best_epoch, resumed.best_val_loss) == (full.best_epoch, full.best_val_loss)
    _assert_same_weights(full.last_path, resumed.last_path)
    _assert_same_weights(full.best_path, resumed.best_path)
    report_full, _ = torch_evaluate.evaluate_split(full.best_path, tiny_manifest, n_resamples=20)
    report_resumed, _ = torch_evaluate.evaluate_split(resumed.best_path, tiny_manifest, n_resamples=20)
    assert json.dumps(report_full, sort_keys=True) == json.dumps(report_resumed, sort_keys=True)  # NaN-safe
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cut" / "history.csv"),
                                  pd.read_csv(tmp_path / "full" / "history.csv"))


def test_kept_images_train_the_same_bits_and_resume_across_the_setting(tiny_manifest, tmp_path):
    """train_multiclass.image_cache_mb changes speed, not results: a run with the decoded images kept equals one
    that reads the files every epoch, and a run cut with one setting resumes under the other."""
    common = dict(epochs=2, batch_size=4, image_size=32, num_workers=2, weighted_sampler=True, precise_bn=True,
                  augment="flip", learning_rate=0.0005, seed=4)
    files = train(run_config("keep", "squeezenet", image_cache_mb=0, **common), tiny_manifest, tmp_path / "files",
                  verbose=False)
    kept_cfg = run_config("keep", "squeezenet", image_cache_mb=1, **common)
    assert kept_cfg.resume_key() == files.config.resume_key()
    assert "image_cache_mb" not in kept_cfg.result_settings()
    with pytest.raises(Interrupted):
        train(kept_cfg, tiny_manifest, tmp_path / "kept", on_batch_end=stop_at(2, 1), verbose=False)
    resumed = train(files.config, tiny_manifest, tmp_path / "kept", verbose=False)
    assert resumed.resumed_from_epoch == 1
    kept = train(kept_cfg, tiny_manifest, tmp_path / "kept_whole", verbose=False)
    for other in (resumed, kept):
        pd.testing.assert_frame_equal(other.history, files.history)
        _assert_same_weights(other.best_path, files.best_path)
        _assert_same_weights(other.last_path, files.last_path)


def test_resume_survives_deleted_outputs(tiny_manifest, tmp_path, capsys):
    """DVC deletes a stage's outputs before it runs it: last.pt and a copy of best.pt live elsewhere."""
    cfg = run_config("dvc", "squeezenet", epochs=3, batch_size=4, image_size=32, num_workers=0,
                     learning_rate=0.0005, seed=3)
    full = train(cfg, tiny_manifest, tmp_path / "full", checkpoint_dir=tmp_path / "full_ckpt", verbose=False)
    assert not (tmp_path / "full" / "last.pt").exists() and (tmp_path / "full_ckpt" / "last.pt").is_file()

    with pytest.raises(Interrupted):
        train(cfg, tiny_manifest, tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", on_batch_end=stop_at(3, 1),
              verbose=False)
    import shutil

    shutil.rmtree(tmp_path / "out")  # what `dvc repro` does to models/ before re-running the stage
    capsys.readouterr()
    resumed = train(cfg, tiny_manifest, tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", verbose=False)
    assert capsys.readouterr().out.startswith("dvc: resuming after epoch 2 from ")
    assert resumed.resumed_from_epoch == 2
    assert (tmp_path / "out" / "best.pt").read_bytes() == (tmp_path / "full" / "best.pt").read_bytes()
    assert (tmp_path / "out" / "history.csv").read_bytes() == (tmp_path / "full" / "history.csv").read_bytes()


def test_checkpoint_of_other_code_or_unreadable_is_not_resumed(tiny_manifest, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="xraylib.torch_train")  # an expected restart is information, not a warning
    cfg = run_config("code", "squeezenet", epochs=1, batch_size=4, image_size=32, num_workers=0, seed=2)
    train(cfg, tiny_manifest, tmp_path / "run", verbose=False)
    monkeypatch.setattr(torch_train, "code_fingerprint", lambda: "other code")
    with pytest.raises(Interrupted):  # it trains (and is stopped) instead of reloading the finished run
        train(cfg, tiny_manifest, tmp_path / "run", on_batch_end=stop_at(1, 0), verbose=False)
    assert "other settings, data or code" in caplog.text
    monkeypatch.undo()

    last = tmp_path / "run" / "last.pt"
    last.write_bytes(b"PK\x03\x04 truncated")
    caplog.clear()
    result = train(cfg, tiny_manifest, tmp_path / "run", verbose=False)
    assert result.resumed_from_epoch == 0 and len(result.history) == 1
    assert "cannot resume from" in caplog.text and (tmp_path / "run" / "last.pt.unreadable").is_file()


def test_checkpoints_history_and_rerun(tiny_manifest, tmp_path, capsys):
    cfg = run_config("ckpt", "resnet18", epochs=2, batch_size=6, image_size=32, num_workers=0,
                     learning_rate=0.001, seed=1)
    result = train(cfg, tiny_manifest, tmp_path / "ckpt")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all("val_loss" in line for line in printed)
    history = pd.read_csv(tmp_path / "ckpt" / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert result.best_epoch == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    best = torch.load(result.best_path, weights_only=True)
    assert best["class_names"] == ["BACTERIA", "NORMAL", "VIRUS"]
    assert (best["arch"], best["image_size"], best["resize"], best["equalize"]) == ("resnet18", 32, "stretch", "none")
    assert best["epoch"] == result.best_epoch and best["val_loss"] == pytest.approx(result.best_val_loss)

    # A finished run is reloaded, not retrained, says so, and prints the same epoch lines.
    again = train(cfg, tiny_manifest, tmp_path / "ckpt", on_batch_end=stop_at(1, 0))
    reprinted = capsys.readouterr().out.splitlines()
    assert reprinted[0].startswith("ckpt: finished; reloaded from ") and reprinted[1:] == printed
    pd.testing.assert_frame_equal(again.history, result.history)

    # More epochs continue the same run; other settings start afresh.
    longer = train(RunConfig(**{**cfg.__dict__, "epochs": 3}), tiny_manifest, tmp_path / "ckpt", verbose=False)
    assert longer.resumed_from_epoch == 2 and len(longer.history) == 3
    for changed in ({"learning_rate": 0.01}, {"epochs": 2}):  # other settings, or fewer epochs than done
        with pytest.raises(Interrupted):
            train(RunConfig(**{**longer.config.__dict__, **changed}), tiny_manifest, tmp_path / "ckpt",
                  on_batch_end=stop_at(1, 0), verbose=False)
    assert not (tmp_path / "ckpt" / "best.pt").exists(), "a fresh run drops the previous best checkpoint"


def test_notebook_route_trains_on_any_manifest_folder_outside_the_project_outputs(tiny_manifest, tmp_path, capsys):
    """`xraylib --set ... notebook train_multiclass --out DIR`: the one route outside DVC (notebook 04 itself)."""
    from xraylib import cli

    manifest_dir = tmp_path / "manifest"
    manifest_dir.mkdir()
    tiny_manifest.to_csv(manifest_dir / "manifest.csv", index=False)
    (manifest_dir / "summary.json").write_text(json.dumps({"synthetic": True, "source": "synthetic"}))
    project_metrics = config.METRICS_DIR / "multiclass.json"
    before = project_metrics.read_bytes() if project_metrics.is_file() else None
    overrides = {"manifest_dir": str(manifest_dir), "image_size": 32, "epochs": 1, "num_workers": 0, "batch_size": 6,
                 "n_resamples": 20, "runs": "{squeezenet: {arch: squeezenet, step_lr: false}}"}
    argv = [arg for key, value in overrides.items() for arg in ("--set", f"train_multiclass.{key}={value}")]
    out = tmp_path / "out"
    assert cli.main([*argv, "notebook", "train_multiclass", "--out", str(out), "--quiet"]) == 0
    assert f"-> {out / 'notebooks' / '04_train_multiclass.ipynb'}" in capsys.readouterr().out
    document = json.loads((out / "metrics" / "multiclass.json").read_text())
    assert list(document["runs"]) == ["squeezenet"] and "per_class" in document["runs"]["squeezenet"]["test"]
    assert (out / "model" / "squeezenet" / "best.pt").is_file()
    assert (out / "figures" / "train_multiclass" / "confusion_squeezenet.svg").is_file()
    assert (project_metrics.read_bytes() if project_metrics.is_file() else None) == before, "project reports touched"
    assert config.REPORTS_ENV not in __import__("os").environ


def test_precise_batchnorm_sets_the_exact_statistics_of_the_data():
    """After recompute_batchnorm the running mean/var are those of all images, not a lagging moving average."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[[1.0]]], [[[2.0]]]]))
    model[1].running_mean.fill_(5.0)  # stale statistics from "earlier weights"
    batches = [torch.randn(4, 1, 3, 3) * s + m for s, m in ((1.0, 0.0), (2.0, 3.0), (0.5, -1.0))]
    loader = [(x, torch.zeros(len(x), dtype=torch.long)) for x in batches]
    assert torch_train.recompute_batchnorm(model, loader, torch.device("cpu")) == 1
    features = torch.cat(batches)  # channel k of the conv output is (k + 1) * input
    expected_mean = torch.stack([features.mean(), 2 * features.mean()])
    torch.testing.assert_close(model[1].running_mean, expected_mean, rtol=1e-5, atol=1e-6)
    # The cumulative average of per-batch unbiased variances (what BatchNorm with momentum=None keeps).
    per_batch = torch.stack([torch.stack([b.var(unbiased=True), (2 * b).var(unbiased=True)]) for b in batches])
    torch.testing.assert_close(model[1].running_var, per_batch.mean(0), rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1  # the layer's own momentum is restored


def test_checkpoint_records_its_data_source_and_a_synthetic_model_warns_on_use(tiny_manifest, tmp_path):
    from xraylib import inference

    cfg = run_config("src", "squeezenet", epochs=1, batch_size=6, image_size=32, num_workers=0, seed=4)
    result = train(cfg, tiny_manifest, tmp_path / "run", verbose=False, data_source="synthetic")
    model = inference.load_classifier(result.best_path)
    assert model.settings.data_source == "synthetic"
    with pytest.warns(UserWarning, match=r"trained on the synthetic demo images \(data_source: synthetic\)"):
        inference.predict_files(model, [tiny_manifest["path"].iloc[0]], tmp_path / "p.csv")


# --- CPU recipe options (issue 13): schedules, label smoothing, progressive resizing, numerics -----------------------

def _recording_build(monkeypatch, shapes: list, dtypes: list):
    """Make train() build models that record each training input's size and the dtype of their logits."""
    real = torch_train.build_model

    def build(*args, **kwargs):
        model = real(*args, **kwargs)

        def record(module, inputs, output):
            if module.training:
                shapes.append(tuple(inputs[0].shape[-2:]))
                dtypes.append(output.dtype)
        model.register_forward_hook(record)
        return model
    monkeypatch.setattr(torch_train, "build_model", build)


def test_schedules_step_per_batch_and_steplr_wins(tiny_manifest, tmp_path):
    base = dict(epochs=3, batch_size=6, image_size=32, num_workers=0, learning_rate=0.001, seed=1)
    onecycle = train(run_config("oc", "resnet18", lr_schedule="onecycle", **base), tiny_manifest, tmp_path / "oc",
                     verbose=False)
    lrs = onecycle.history["lr"].tolist()
    # one-cycle: warm-up from max_lr/25 in the first 15 % of the steps, then annealing far below max_lr
    assert lrs[0] == pytest.approx(0.001 / 25) and max(lrs) <= 0.001 and lrs[-1] < lrs[1]
    cosine = train(run_config("cos", "resnet18", lr_schedule="cosine", **base), tiny_manifest, tmp_path / "cos",
                   verbose=False)
    assert cosine.history["lr"].tolist()[0] == pytest.approx(0.001)
    assert cosine.history["lr"].is_monotonic_decreasing and cosine.history["lr"].iloc[-1] < 0.001
    step = train(run_config("st", "resnet18", step_lr=True, lr_schedule="onecycle", step_size=2, gamma=0.1, **base),
                 tiny_manifest, tmp_path / "st", verbose=False)
    assert step.history["lr"].tolist() == pytest.approx([0.001, 0.001, 0.0001])


def test_progressive_resizing_trains_the_first_epochs_small(tiny_manifest, tmp_path, monkeypatch):
    shapes, dtypes = [], []
    _recording_build(monkeypatch, shapes, dtypes)
    cfg = run_config("prog", "resnet18", epochs=3, batch_size=10, image_size=48, progressive_resizing=[32, 40],
                     num_workers=0, precise_bn=False, seed=1)
    train(cfg, tiny_manifest, tmp_path / "prog", verbose=False)
    per_epoch = len(shapes) // 3
    assert [shapes[i * per_epoch] for i in range(3)] == [(32, 32), (40, 40), (48, 48)]
    assert set(shapes[:per_epoch]) == {(32, 32)} and set(shapes[-per_epoch:]) == {(48, 48)}
    assert torch_train.image_size_at(cfg, 1) == 32 and torch_train.image_size_at(cfg, 9) == 48


def test_bfloat16_autocast_and_channels_last_train_and_reload(tiny_manifest, tmp_path, monkeypatch):
    shapes, dtypes = [], []
    _recording_build(monkeypatch, shapes, dtypes)
    cfg = run_config("bf", "resnet18", epochs=1, batch_size=10, image_size=32, num_workers=0, seed=1,
                     cpu_bfloat16=True, channels_last=True, label_smoothing=0.1)
    result = train(cfg, tiny_manifest, tmp_path / "bf", verbose=False)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert result.extra["epochs_trained"] == 1 and result.extra["train_seconds"] > 0
    y_true, y_prob = torch_evaluate.split_probabilities(result.best_path, tiny_manifest, "test")[:2]
    assert y_prob.shape == (len(y_true), 3) and abs(y_prob.sum(1) - 1).max() < 1e-5
    numerics = torch_train.numerics_for(cfg, torch.device("cpu"))
    assert numerics.autocast and numerics.dtype == torch.bfloat16 and numerics.channels_last
    assert not torch_train.numerics_for(dataclasses.replace(cfg, cpu_bfloat16=False), torch.device("cpu")).autocast


def test_label_smoothing_changes_the_training_loss_only(tiny_manifest, tmp_path):
    base = dict(epochs=1, batch_size=6, image_size=32, num_workers=0, seed=1, precise_bn=False)
    plain = train(run_config("ls0", "resnet18", **base), tiny_manifest, tmp_path / "ls0", verbose=False)
    smooth = train(run_config("ls1", "resnet18", label_smoothing=0.2, **base), tiny_manifest, tmp_path / "ls1",
                   verbose=False)
    assert smooth.history["loss"].iloc[0] != pytest.approx(plain.history["loss"].iloc[0], abs=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
    ({"label_smoothing": 1.0}, "label_smoothing must be a number in [0, 1)"),
    ({"augment": "mixup"}, "augment must be one of"),
    ({"progressive_resizing": [16]}, "image sizes >= 32"),
    ({"progressive_resizing": [32, 32], "epochs": 2}, "at least the last of the 2 epochs"),
])
def test_recipe_options_are_checked(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_config("bad", "resnet18", **overrides)


def test_schema_takes_per_run_settings_and_checks_progressive_sizes():
    params = study_params()
    runs = {"e": {"arch": "efficientnet_lite0", "step_lr": False, "weights": "imagenet", "image_size": 160,
                  "epochs": 3, "lr_schedule": "onecycle", "progressive_resizing": [128]}}
    changed = schema.apply_overrides(params, {"train_multiclass.runs": runs})
    schema.validate_params(changed)
    cfg = torch_train.configs_from_params(changed)[0]
    assert (cfg.arch, cfg.weights, cfg.image_size, cfg.epochs, cfg.progressive_resizing) == \
        ("efficientnet_lite0", "imagenet", 160, 3, [128])
    bad = {"e": {**runs["e"], "progressive_resizing": [96, 128, 144]}}
    with pytest.raises(ValueError, match=r"runs\.e\.progressive_resizing: expected fewer sizes than the run's 3"):
        schema.validate_params(schema.apply_overrides(params, {"train_multiclass.runs": bad}))
