"""Model cards follow Mitchell et al. 2019 section by section, carry every interval and parse as Hugging Face cards."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import socket
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from xraylib import config, model_card

POINT_OLD = {"threshold": 0.247806, "accuracy": 0.962963, "sensitivity": 0.959016, "specificity": 0.970149,
             "precision": 0.983193, "npv": 0.928571, "f1": 0.970954, "tp": 117, "fp": 2, "tn": 65, "fn": 5,
             "sensitivity_ci": [0.918033, 0.991803], "specificity_ci": [0.925373, 1.0]}
# The shape of reports/metrics/binary.json before intervals, bootstrap and calibration blocks were added.
BINARY_OLD = {
    "model": {"backbone": "small_cnn", "image_size": 64, "parameters": 98001, "epochs_run": 20,
              "trained_from": "all layers"},
    "data": {"train": {"images": 516, "positive": 346}, "test": {"images": 189, "positive": 122}},
    "threshold": {"youden_val": 0.247806, "original": 0.75},
    "test": {"n": 189, "n_positive": 122, "roc_auc": 0.993271, "roc_auc_ci": [0.983362, 0.999266],
             "average_precision": 0.996753, "brier": 0.043118, "ece": 0.06865,
             "original_0.75": {**POINT_OLD, "threshold": 0.75, "sensitivity": 0.836066,
                               "sensitivity_ci": [0.762295, 0.901639], "specificity": 1.0,
                               "specificity_ci": [1.0, 1.0]},
             "youden_val": POINT_OLD},
}


def _with_cis(point: dict) -> dict:
    cis = {f"{k}_ci": [round(v - 0.05, 6), round(min(v + 0.02, 1.0), 6)] for k, v in point.items()
           if isinstance(v, float) and k != "threshold" and f"{k}_ci" not in point}
    return {**point, **cis}


# The new shape: nearly every metric with X_ci, a bootstrap block, calibration, subgroups, seeds, an external set,
# and keys no renderer knows.
BINARY_NEW = copy.deepcopy(BINARY_OLD)
BINARY_NEW["test"].update({
    "average_precision_ci": [0.99, 0.999], "brier_ci": [0.031, 0.057], "ece_ci": [0.041, 0.102],
    "youden_val": _with_cis(POINT_OLD), "stored_threshold": _with_cis({**POINT_OLD, "threshold": 0.31}),
    "seeds": {"values": {"1": 0.991, "2": 0.994, "3": 0.989}, "mean": 0.9913, "sd": 0.0025},
    "unheard_of": {"alpha": [1, 2], "beta": None},
    "a_list": [1, 2, 3],
    "a_missing_metric": float("nan"),
})
BINARY_NEW["bootstrap"] = {"method": "95 % patient-clustered bootstrap (resampling leakage groups within each class), "
                                     "exact Clopper-Pearson where a proportion is 0 or 1",
                           "n_resamples": 2000, "n_nan": {"roc_auc": 3, "npv": 0}, "groups": 150, "confidence": 0.95}
# As xraylib.metrics writes them now: the calibration block beside the test report, with the stored parameters as
# its method and its own bootstrap; subgroups nested by threshold; comparisons as lists of records; a null interval.
BINARY_NEW["calibration"] = {
    "method": {"method": "platt", "a": 1.7, "b": -0.4, "fitted_on": "validation split"},
    "before": {"ece": 0.0687, "ece_ci": [0.041, 0.102], "brier": 0.0431, "brier_ci": [0.03, 0.06],
               "slope": 0.81, "slope_ci": [0.6, 1.02], "intercept": -0.12, "intercept_ci": [-0.41, 0.17]},
    "after": {"ece": 0.0301, "ece_ci": [0.017, 0.061], "slope": 1.02, "slope_ci": None},
    "bootstrap": {"method": "patient-clustered", "n_resamples": 2000, "n_nan": {}}}
BINARY_NEW["subgroups"] = {"bacteria": {"n": 80, "roc_auc": 0.995, "roc_auc_ci": [0.98, 1.0],
                                        "youden_val": {"threshold": 0.2478, "sensitivity": 0.975,
                                                       "sensitivity_ci": [0.913, 0.997]}},
                           "virus": {"n": 42, "youden_val": {"sensitivity": 0.929, "sensitivity_ci": [0.805, 0.985]}},
                           "night_shift": {"n": 12, "accuracy": 0.917, "accuracy_ci": [0.615, 0.998]}}
BINARY_NEW["comparisons"] = {
    "thresholds": [{"threshold_a": "original_0.75", "threshold_b": "youden_val", "right_only_a": 2,
                    "right_only_b": 15, "mcnemar_p": 0.0023}],
    "models": [{"model_a": "tta=none", "model_b": "tta=flip", "auc_a": 0.993, "auc_b": 0.991, "difference": 0.002,
                "delong_p": 0.41, "bootstrap_ci_low": -0.004, "bootstrap_ci_high": 0.008, "bootstrap_p": 0.5}]}
BINARY_NEW["bootstrap"].update({"interval": "BCa (bias-corrected and accelerated)", "images": 189,
                                "exact": ["youden_val.specificity"]})
BINARY_NEW["external"] = {"kermany224_external_dev": {
    "n": 326, "n_positive": 205, "roc_auc": 0.871, "roc_auc_ci": [0.832, 0.905],
    "youden_val": {"threshold": 0.247806, "sensitivity": 0.98, "sensitivity_ci": [0.95, 0.995],
                   "specificity": 0.41, "specificity_ci": [0.33, 0.5]}}}

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
PER_CLASS = {c: {"tp": 10, "fp": 1, "fn": 2, "tn": 84, "precision": 0.909091, "recall": 0.833333, "f1": 0.869565,
                 "specificity": 0.988235, "support": 12} for c in CLASSES}
MULTICLASS_OLD = {"synthetic": True, "classes": list(PER_CLASS), "runs": {"resnet18": {
    "arch": "resnet18", "step_lr": False, "epochs": 8, "best_epoch": 6, "best_val_loss": 0.236408,
    "final_val_accuracy": 0.864583,
    "test": {"n": 97, "accuracy": 0.917526, "balanced_accuracy": 0.933923, "macro_f1": 0.916085,
             "macro_f1_ci": [0.864371, 0.963398], "weighted_f1": 0.920261, "macro_auc_ovr": 0.997541, "ece": 0.053167,
             "per_class": PER_CLASS,
             "confusion_matrix": [[15, 0, 0, 0], [0, 26, 1, 0], [5, 1, 38, 0], [1, 0, 0, 10]]}}}}
MULTICLASS_NEW = copy.deepcopy(MULTICLASS_OLD)
_run = MULTICLASS_NEW["runs"]["resnet18"]
_run["training"] = {"learning_rate": 0.0001, "weights": "imagenet", "weighted_sampler": True, "seed": 42}
_run["test"].update({"accuracy_ci": [0.85, 0.96], "balanced_accuracy_ci": [0.87, 0.97],
                     "macro_auc_ovr_ci": [0.99, 1.0], "ece_ci": [0.03, 0.09],
                     "per_class": {c: _with_cis(v) for c, v in PER_CLASS.items()}})
_run["test"].update({"brier": 0.12, "brier_ci": None, "epoch": 6, "class_names": list(PER_CLASS),
                     "calibration": {"method": {"method": "temperature", "temperature": 1.37,
                                                "fitted_on": "validation split"},
                                     "before": {"ece": 0.053, "ece_ci": [0.03, 0.09], "log_loss": 0.31,
                                                "log_loss_ci": [0.22, 0.41]},
                                     "after": {"ece": 0.021, "ece_ci": [0.012, 0.05]}}})
_run["seeds"] = {"accuracy": {"values": {"1": 0.91, "2": 0.93}, "mean": 0.92, "sd": 0.0141, "n": 2},
                 "macro_f1": {"values": {"1": 0.9, "2": None}, "mean": 0.9, "sd": None, "n": 1}}
MULTICLASS_NEW["runs"]["squeezenet"] = copy.deepcopy(MULTICLASS_OLD["runs"]["resnet18"])
MULTICLASS_NEW["comparisons"] = [
    {"run_a": "resnet18", "run_b": "squeezenet", "macro_f1_difference": 0.066, "ci_low": 0.01, "ci_high": 0.12,
     "bootstrap_p": 0.02, "bootstrap_p_holm": 0.04, "mcnemar_p": 0.0004},
    {"run_a": "densenet121", "run_b": "squeezenet", "macro_f1_difference": 0.01, "ci_low": -0.03, "ci_high": 0.05,
     "bootstrap_p": 0.6, "bootstrap_p_holm": 0.6, "mcnemar_p": 0.7}]
MULTICLASS_NEW["bootstrap"] = {"method": "95 % patient-clustered bootstrap", "n_resamples": 500, "n_nan": 2,
                               "groups": 60, "confidence": 0.95}

DATA_OLD = {"task": "binary", "source": "synthetic", "synthetic": True, "root": "data/raw/synthetic/chest_xray",
            "classes": ["NORMAL", "PNEUMONIA"], "images": 791, "patients": 400, "quarantined": 0,
            "per_split": {"train": 516, "val": 86, "test": 189}, "per_class": {"NORMAL": 265, "PNEUMONIA": 526},
            "leakage_patients": 0, "leakage_identical_files": 0}
DATA_KERMANY = {**DATA_OLD, "source": "kermany", "synthetic": False, "root": "../shared/data/kermany224",
                "split_level": "patient", "patient_id_source": "file names (personN_..., IM-XXXX-...)",
                "near_duplicate_pairs": 0, "patient_id_caveat": "NORMAL2 files may share numbers with IM files."}
DATA_COVID = {"task": "multiclass", "source": "covid_radiography", "synthetic": False,
              "root": "../shared/data/covid4_224", "classes": list(PER_CLASS), "split_level": "image",
              "patient_id_source": "none: no patient ids in the file names", "near_duplicate_pairs": 4,
              "per_split": {"train": 3000, "val": 600, "test": 649}}
GRADCAM = {"models": {
    "binary": {"info": {"framework": "keras", "map_size": [8, 8]},
               "overall": {"images": 30, "empty_maps": 0, "pointing_game": 0.266667, "pointing_game_chance": 0.026123,
                           "pointing_game_ci": [0.12, 0.45], "topk_iou": 0.19, "topk_iou_ceiling": 0.61,
                           "lung_energy": 0.47, "lung_energy_chance": 0.25, "lung_energy_ci": [0.41, 0.53],
                           "faithfulness": {"deletion_auc": 0.31, "deletion_auc_random": 0.44, "difference": 0.13,
                                            "difference_ci": [0.07, 0.19]}}},
    "resnet18": {"images": 56, "empty_maps": 56, "pointing_game": 0.0, "pointing_game_chance": 0.07,
                 "lung_energy": None, "lung_energy_chance": 0.25, "info": {"map_size": [1, 1]}}}}


def _binary(metrics: dict, summary: dict, **kw) -> str:
    facts = {"task": "binary", "framework": "keras", **metrics["model"], "thresholds": metrics["threshold"]}
    report = {**metrics["test"], **{k: metrics[k] for k in ("bootstrap", "external", "calibration", "subgroups",
                                                            "comparisons") if k in metrics}}
    return model_card.render_model_card("binary", facts, summary, report, gradcam=GRADCAM, **kw)


def _multiclass(metrics: dict, summary: dict) -> str:
    run = metrics["runs"]["resnet18"]
    facts = {"task": "multiclass", "framework": "torch", **{k: v for k, v in run.items() if k not in ("test", "seeds")}}
    report = {**run["test"], **{k: v for k, v in (("bootstrap", metrics.get("bootstrap")), ("seeds", run.get("seeds")),
                                                  ("comparisons", metrics.get("comparisons"))) if v is not None}}
    return model_card.render_model_card("resnet18", facts, summary, report, gradcam=GRADCAM)


CASES = {"binary old": lambda: _binary(BINARY_OLD, DATA_OLD), "binary new": lambda: _binary(BINARY_NEW, DATA_KERMANY),
         "multiclass old": lambda: _multiclass(MULTICLASS_OLD, {**DATA_OLD, "task": "multiclass",
                                                                "classes": list(PER_CLASS)}),
         "multiclass new": lambda: _multiclass(MULTICLASS_NEW, DATA_COVID)}


def _body(text: str) -> str:
    assert text.startswith("---\n")
    return text.split("\n---\n", 1)[1]


def _intervals(block, found=None) -> list[tuple[float, list]]:
    """Every (value, [low, high]) pair by the X / X_ci convention, at any depth."""
    found = [] if found is None else found
    if isinstance(block, dict):
        for key, value in block.items():
            if key.endswith("_ci") and key[:-3] in block and isinstance(value, list):
                found.append((block[key[:-3]], value))
            _intervals(value, found)
    return found


@pytest.mark.parametrize("case", CASES)
def test_every_mitchell_section_in_order(case):
    body = _body(CASES[case]())
    positions = [body.find(f"\n## {section}\n") for section in model_card.MITCHELL_SECTIONS]
    assert all(p >= 0 for p in positions), dict(zip(model_card.MITCHELL_SECTIONS, positions))
    assert positions == sorted(positions)
    for words in ("Primary uses", "Primary users", "Out of scope", "Training procedure", "Licence",
                  "Citation of the original studies", "Decision", "Uncertainty", "Internal test split"):
        assert words in body, (case, words)


@pytest.mark.parametrize("case", CASES)
def test_no_python_text_leaks_into_the_markdown(case):
    text = CASES[case]()
    body = _body(text)
    for pattern in ("{'", "['", "': ", '{"', '["'):
        assert pattern not in text, (case, pattern)
    assert not re.search(r"\bNone\b|\bnan\b|\bNaN\b|\bTrue\b|\bFalse\b", body), case


def test_every_interval_is_printed():
    text = _binary(BINARY_NEW, DATA_KERMANY)
    sources = [BINARY_NEW[k] for k in ("test", "external", "calibration", "subgroups")] + [GRADCAM["models"]["binary"]]
    pairs = [pair for source in sources for pair in _intervals(source)]
    assert len(pairs) > 30
    for value, ci in pairs:
        assert model_card.format_value(value, ci) in text, (value, ci)
    assert "0.993 (95 % CI 0.983-0.999)" in text
    assert "-0.120 (95 % CI -0.410 to 0.170)" in text  # calibration intercept: negative bounds stay readable
    text = _multiclass(MULTICLASS_NEW, DATA_COVID)
    for value, ci in _intervals(MULTICLASS_NEW["runs"]["resnet18"]["test"]):
        assert model_card.format_value(value, ci) in text, (value, ci)
    # the old files' intervals too (sensitivity/specificity used to be dropped)
    text = _binary(BINARY_OLD, DATA_OLD)
    for value, ci in _intervals(BINARY_OLD["test"]):
        assert model_card.format_value(value, ci) in text, (value, ci)
    assert "0.959 (95 % CI 0.918-0.992)" in text and "0.970 (95 % CI 0.925-1.000)" in text


def test_format_value():
    assert model_card.format_value(0.91234, [0.8712, 0.9441]) == "0.912 (95 % CI 0.871-0.944)"
    assert model_card.format_value(0.91234, [0.8712, 0.9441], 0.9) == "0.912 (90 % CI 0.871-0.944)"
    assert model_card.format_value(0.5, [float("nan"), None]) == "0.500 (95 % CI not available)"
    assert model_card.format_value(12) == "12" and model_card.format_value(None) == "n/a"
    assert model_card.format_value(float("nan"), "garbage") == "n/a"


def test_tables_and_blocks_of_the_new_metrics():
    body = _body(_binary(BINARY_NEW, DATA_KERMANY))
    row = next(line for line in body.splitlines() if line.startswith("| youden_val |"))
    assert "0.959 (95 % CI 0.918-0.992)" in row and "0.983 (95 % CI 0.933-1.000)" in row and "117 / 2 / 65 / 5" in row
    assert "| stored_threshold | 0.310 |" in body
    # calibration: the stored parameters in words, before/after rows, a null interval reads "not available"
    assert "Platt scaling, sigmoid(a * logit(p) + b), a 1.7, b -0.4, fitted on the validation split" in body
    assert "| after | 0.030 (95 % CI 0.017-0.061) | n/a | 1.020 (95 % CI not available) | n/a |" in body
    assert "calibration: Platt scaling" in body  # in the training procedure too
    # subgroups nested by threshold become columns
    assert "| bacteria | 80 | 0.995 (95 % CI 0.980-1.000) | n/a | 0.975 (95 % CI 0.913-0.997) |" in body
    assert "sensitivity at youden_val" in body and "evaluated: subgroups bacteria, virus" in body
    assert "Other evaluated subgroups: night_shift" in body
    assert "mean 0.991, SD 0.0025" in body and "seed 2 0.994" in body
    assert "2000 resamples" in body and "150 resampled groups over 189 images" in body and "ROC AUC 3" in body
    assert "BCa (bias-corrected and accelerated) intervals" in body
    assert "exact Clopper-Pearson intervals for youden_val.specificity" in body
    assert "patient-clustered bootstrap" in body and "Clopper-Pearson" in body
    # comparisons: one table per list, the interval attached to the difference, small p-values as "< 0.001"
    assert "| original_0.75 | youden_val | 2 | 15 | 0.002 |" in body
    assert "| tta=none | tta=flip | 0.993 | 0.991 | 0.002 (95 % CI -0.004 to 0.008) | 0.410 | 0.500 |" in body
    assert "### External set: kermany224_external_dev" in body and "0.871 (95 % CI 0.832-0.905)" in body
    assert "deletion AUC" in body and "random maps 0.440" in body and "ceiling 0.610" in body
    assert "unheard of alpha 1, 2; beta n/a" in body  # unknown keys: shown as text, no crash
    multi = _body(_multiclass(MULTICLASS_NEW, DATA_COVID))
    assert "| COVID | 12 | 0.909 (95 % CI 0.859-0.929) |" in multi
    assert "learning rate 0.0001" in multi and "imagenet" in multi and "WeightedRandomSampler" in multi
    assert "| Lung_Opacity | 0 | 26 | 1 | 0 |" in multi  # confusion matrix with class names
    assert "| Brier score | 0.120 (95 % CI not available) |" in multi and "epoch 6" in multi
    assert "temperature scaling (Guo et al. 2017), temperature 1.37" in multi
    assert "| before | 0.053 (95 % CI 0.030-0.090) | 0.310 (95 % CI 0.220-0.410) |" in multi
    assert "accuracy across 2 training seeds: mean 0.920, SD 0.014" in multi and "SD n/a" in multi
    assert "| resnet18 | squeezenet | 0.066 (95 % CI 0.010-0.120) | 0.020 | 0.040 | < 0.001 |" in multi


def test_old_metrics_say_the_interval_method_is_unrecorded():
    body = _body(_binary(BINARY_OLD, DATA_OLD))
    assert "does not record how its intervals were computed" in body
    assert "patient-clustered" not in body
    assert "split level: not recorded" in body


def test_yaml_metadata_parses_with_the_results():
    text = _binary(BINARY_NEW, DATA_KERMANY)
    data = ModelCard(text).data.to_dict()
    assert data["license"] == "mit" and data["library_name"] == "keras"
    assert {"medical-imaging", "chest-x-ray", "image-classification"} <= set(data["tags"])
    assert "synthetic-data" not in data["tags"] and data["datasets"] == ["kermany-chest-xray-pneumonia"]
    results = data["model-index"][0]["results"]
    assert data["model-index"][0]["name"] == "binary"
    test = {(m["type"], m.get("config")): m["value"] for r in results if r["dataset"]["split"] == "test"
            for m in r["metrics"]}
    assert test[("roc_auc", None)] == 0.993271
    assert test[("sensitivity", "stored_threshold")] == POINT_OLD["sensitivity"]
    external = [r for r in results if r["dataset"]["split"] == "external"]
    assert external[0]["dataset"]["type"] == "kermany224_external_dev"
    assert external[0]["metrics"][next(i for i, m in enumerate(external[0]["metrics"])
                                       if m["type"] == "roc_auc")]["value"] == 0.871
    cis = {(c["split"], c["metric"], c.get("operating_point")): (c["low"], c["high"])
           for c in data["confidence_intervals"]}
    assert cis[("test", "roc_auc", None)] == (0.983362, 0.999266)
    multi = ModelCard(_multiclass(MULTICLASS_NEW, DATA_COVID)).data.to_dict()
    assert multi["library_name"] == "pytorch" and multi["license"] == "other"
    values = {m["type"]: m["value"] for r in multi["model-index"][0]["results"] for m in r["metrics"]}
    assert values["accuracy"] == 0.917526 and values["macro_f1"] == 0.916085


def test_synthetic_warning_only_for_synthetic_data():
    assert "SYNTHETIC" in _binary(BINARY_OLD, DATA_OLD)
    assert "synthetic-data" in ModelCard(_binary(BINARY_OLD, DATA_OLD)).data.to_dict()["tags"]
    assert "SYNTHETIC" not in _binary(BINARY_NEW, DATA_KERMANY)


@pytest.mark.parametrize("level, warned", [("image", True), ("mixed", True), ("patient", False), (None, False)])
def test_image_level_split_warning(level, warned):
    summary = {**DATA_KERMANY, "split_level": level}
    body = _body(_binary(BINARY_NEW, summary))
    assert ("not fully patient-level" in body) == warned
    if warned:
        assert f"split_level: {level}" in body


def test_population_of_each_source():
    kermany = _body(_binary(BINARY_NEW, DATA_KERMANY))
    assert "children aged one to five years" in kermany and "Guangzhou Women and Children's Medical Center" in kermany
    assert "one centre" in kermany and "retrospectively" in kermany and "Cell 2018" in kermany
    assert "adults and children outside one to five years" in kermany  # out of scope
    assert "NORMAL2 files may share numbers" in kermany  # the patient-id caveat
    assert "resized to 224x224 without keeping the aspect ratio" in kermany
    covid = _body(_multiclass(MULTICLASS_NEW, DATA_COVID))
    assert "many public collections" in covid and "Mostly adults" in covid and "shortcuts" in covid
    assert "Roberts et al." in covid
    assert "Guangzhou" not in _body(_binary(BINARY_OLD, DATA_OLD))


def test_near_duplicates_are_kept_in_one_split_not_across():
    """``near_duplicate_pairs`` counts every pair (kept in one leakage group); only ``leakage_near_duplicates`` is
    the number across splits."""
    body = _body(_multiclass(MULTICLASS_NEW, {**DATA_COVID, "leakage_near_duplicates": 0}))
    assert ("near-duplicate pairs (same radiograph re-encoded or resized; kept in one split): 4, across splits: 0"
            in body)
    assert "sit across splits" not in body and "may be optimistic" not in body
    assert "near-duplicate pairs across splits" not in body


def test_old_headline_form_still_accepted(tmp_path):
    results = {"headline": {"roc_auc": 0.91234, "roc_auc_ci": [0.85, 0.95]},
               "operating_points": {"youden_val": {"sensitivity": 0.8, "specificity": 0.7}}}
    path = model_card.write_model_card("binary", {"architecture": "small_cnn", "threshold": 0.42}, DATA_OLD, results,
                                       notes=["Grad-CAM looks inside the lungs."], out_dir=tmp_path)
    text = path.read_text()
    assert path.name == "binary.md"
    assert "0.912 (95 % CI 0.850-0.950)" in text and "| youden_val | 0.800 | 0.700 |" in text
    assert "Not a medical device" in text and "Grad-CAM looks inside the lungs." in text


@pytest.mark.parametrize("report", [
    {}, {"per_class": "oops", "confusion_matrix": "bad", "calibration": {"method": "x", "before": 3}},
    {"subgroups": {"a": None}, "seeds": {"x": 1}, "bootstrap": "text", "external": {"e": "not a report"}},
    {"roc_auc": "0.9", "roc_auc_ci": "wide", "youden_val": {"threshold": None, "sensitivity_ci": [1]}},
])
def test_odd_inputs_do_not_crash(report):
    for summary in ({}, {"classes": None, "source": None}, DATA_COVID):
        text = model_card.render_model_card("m", {"training": "not a dict"}, summary, report,
                                            gradcam={"models": {"m": {"overall": {"images": None}}}})
        body = _body(text)
        assert all(f"\n## {s}\n" in body for s in model_card.MITCHELL_SECTIONS)
        assert "{'" not in body and "['" not in body


def test_rejects_non_dict_inputs():
    with pytest.raises(ValueError, match="must be dicts"):
        model_card.render_model_card("m", {}, [], {})


def _metrics_dir(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for name, value in (("binary", BINARY_NEW), ("multiclass", MULTICLASS_NEW), ("gradcam", GRADCAM),
                        ("data_binary", DATA_KERMANY), ("data_multiclass", DATA_COVID)):
        (metrics / f"{name}.json").write_text(json.dumps(value))
    return metrics


def _binary_model(models):
    """``models/binary`` as the training notebook leaves it: weights and ``model.json``."""
    (models / "binary").mkdir(parents=True)
    (models / "binary" / "model.keras").write_bytes(b"weights")
    (models / "binary" / "model.json").write_text(json.dumps({
        "framework": "keras", "keras_version": "3.15.1", "positive_class": "PNEUMONIA", "weights": "none",
        "threshold_rule": "Youden's J on the validation split",
        "training": {"learning_rate": 0.001, "epochs": 20, "imbalance": "weighted_loss", "augment_zoom": 0.05}}))


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cards_from_metrics_and_next_to_the_weights(tmp_path):
    metrics, models = _metrics_dir(tmp_path), tmp_path / "models"
    _binary_model(models)
    paths = model_card.cards_from_metrics(metrics, tmp_path / "cards", models_dir=models)
    assert [p.name for p in paths] == ["binary.md", "resnet18.md", "squeezenet.md"]
    assert not (models / "binary" / "README.md").exists()  # only on request
    binary = paths[0].read_text()
    assert "learning rate 0.001" in binary and "Keras 3.15.1" in binary and "PNEUMONIA" in binary
    assert "sha256 " + hashlib.sha256(b"weights").hexdigest()[:12] in binary
    assert "patient-clustered bootstrap" in binary and "### External set: kermany224_external_dev" in binary
    assert "0.267 (95 % CI 0.120-0.450)" in binary  # Grad-CAM from gradcam.json
    resnet = paths[1].read_text()
    assert "every image counts as its own patient" in resnet and "Every Grad-CAM map of this model was empty" in resnet
    # the document's run comparisons: only the rows of this run
    assert "| resnet18 | squeezenet |" in resnet and "densenet121" not in resnet
    squeezenet = paths[2].read_text()
    assert "| resnet18 | squeezenet |" in squeezenet and "| densenet121 | squeezenet |" in squeezenet

    paths = model_card.cards_from_metrics(metrics, tmp_path / "cards", models_dir=models, next_to_weights=True)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [  # models/multiclass/<run> folders do not exist
        "cards/binary.md", "cards/resnet18.md", "cards/squeezenet.md", "models/binary/README.md"]
    assert paths[3].read_text() == paths[0].read_text()


def test_cards_from_old_metrics_without_data_summaries(tmp_path):
    (tmp_path / "binary.json").write_text(json.dumps(BINARY_OLD))
    (tmp_path / "multiclass.json").write_text(json.dumps(MULTICLASS_OLD))
    paths = model_card.cards_from_metrics(tmp_path, out_dir=tmp_path / "cards")
    assert [p.name for p in paths] == ["binary.md", "resnet18.md"]
    assert "SYNTHETIC" in paths[1].read_text()  # multiclass.json says so even without data_multiclass.json
    assert "0.916 (95 % CI 0.864-0.963)" in paths[1].read_text()


def test_write_card_next_to_model(tmp_path):
    card = model_card.build_model_card("binary", {}, DATA_OLD, BINARY_OLD["test"])
    path = model_card.write_card_next_to_model(tmp_path, card)
    assert path == tmp_path / "README.md" and ModelCard(path.read_text()).data.to_dict()["model-index"]
    with pytest.raises(FileNotFoundError, match="model folder"):
        model_card.write_card_next_to_model(tmp_path / "missing", card)


def test_binary_card_next_to_weights_at_the_end_of_training(tmp_path):
    metrics, models = _metrics_dir(tmp_path), tmp_path / "models"
    _binary_model(models)
    (models / "multiclass" / "resnet18").mkdir(parents=True)
    for other in ("multiclass", "data_multiclass", "gradcam"):  # never read: not inputs of the binary training stage
        (metrics / f"{other}.json").write_text("not JSON")
    before = _files(tmp_path)
    paths = model_card.write_cards_next_to_weights("binary", models / "binary", metrics)
    assert paths == [models / "binary" / "README.md"]
    after = _files(tmp_path)
    assert set(after) - set(before) == {"models/binary/README.md"}
    assert all(after[k] == v for k, v in before.items())  # nothing else changed
    text = paths[0].read_text()
    assert ModelCard(text).data.to_dict()["model-index"][0]["name"] == "binary"
    assert "learning rate 0.001" in text and "Keras 3.15.1" in text  # from model.json
    assert "Grad-CAM" not in text  # gradcam.json is written by a later stage
    # the same inputs as the model_cards stage: without gradcam.json its card is the same text
    for other in ("multiclass", "data_multiclass", "gradcam"):
        (metrics / f"{other}.json").unlink()
    card = model_card.cards_from_metrics(metrics, tmp_path / "cards", models_dir=models)
    assert [p.name for p in card] == ["binary.md"] and card[0].read_text() == text


def test_multiclass_cards_next_to_weights_of_each_existing_run(tmp_path):
    metrics, models = _metrics_dir(tmp_path), tmp_path / "models"
    (models / "multiclass" / "resnet18").mkdir(parents=True)  # no folder for squeezenet
    (models / "binary").mkdir()
    for other in ("binary", "data_binary", "gradcam"):
        (metrics / f"{other}.json").write_text("not JSON")
    before = _files(tmp_path)
    paths = model_card.write_cards_next_to_weights("multiclass", models / "multiclass", metrics)
    assert paths == [models / "multiclass" / "resnet18" / "README.md"]
    after = _files(tmp_path)
    assert set(after) - set(before) == {"models/multiclass/resnet18/README.md"}
    assert all(after[k] == v for k, v in before.items())
    text = paths[0].read_text()
    assert ModelCard(text).data.to_dict()["model-index"][0]["name"] == "resnet18"
    assert "Grad-CAM" not in text and "| resnet18 | squeezenet |" in text


def test_cards_next_to_weights_read_the_redirected_reports(tmp_path, monkeypatch):
    reports = tmp_path / "elsewhere"
    reports.mkdir()
    _metrics_dir(reports)  # reports/metrics under the folder XRAYLIB_REPORTS names
    _binary_model(tmp_path / "models")
    monkeypatch.setenv(config.REPORTS_ENV, str(reports))
    paths = model_card.write_cards_next_to_weights("binary", tmp_path / "models" / "binary")
    assert paths == [tmp_path / "models" / "binary" / "README.md"]


def test_cards_next_to_weights_check_their_inputs(tmp_path):
    metrics = _metrics_dir(tmp_path)
    with pytest.raises(ValueError, match="not one of binary, multiclass"):
        model_card.write_cards_next_to_weights("both", tmp_path, metrics)
    with pytest.raises(FileNotFoundError, match="model folder"):
        model_card.write_cards_next_to_weights("binary", tmp_path / "models" / "binary", metrics)
    (metrics / "multiclass.json").unlink()
    with pytest.raises(FileNotFoundError, match="multiclass.json not found"):
        model_card.write_cards_next_to_weights("multiclass", tmp_path, metrics)


def test_sections_module_does_not_import_the_card_module():
    """The card assembles the sections; the sections never reach back (no cycle, no upward import)."""
    code = "import sys, xraylib.model_card_sections; print('xraylib.model_card' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_rendering_is_offline(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    paths = model_card.cards_from_metrics(_metrics_dir(tmp_path), tmp_path / "cards")
    assert len(paths) == 3 and ModelCard(paths[0].read_text()).data.to_dict()["model-index"]


def test_import_loads_no_framework_and_no_hub_client():
    code = ("import sys, xraylib.model_card; "
            "print([m for m in ('tensorflow', 'keras', 'torch', 'huggingface_hub') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_site_calibrated_model_card_states_the_stored_site_threshold(tmp_path):
    metrics, models = _metrics_dir(tmp_path), tmp_path / "models"
    _binary_model(models)
    meta = json.loads((models / "binary" / "model.json").read_text())
    meta.update({"threshold": 0.912, "validation_threshold": 0.5,
                 "threshold_rule": "SITE CALIBRATION: Youden's J on the 326 images of the external set 'dev'"})
    (models / "binary" / "model.json").write_text(json.dumps(meta))
    text = model_card.cards_from_metrics(metrics, tmp_path / "cards", models_dir=models)[0].read_text()
    assert "The stored threshold 0.912 was chosen by SITE CALIBRATION" in text
