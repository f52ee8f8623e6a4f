"""Model cards: what each trained model is, how well it did with uncertainty, and where it must not be used.

Each card follows Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019, doi:10.1145/3287560.3287596)
section by section (the sections' Markdown comes from :mod:`xraylib.model_card_sections`; the quantitative
analyses, every number of the test report in tables, are written here). It is a Hugging Face model card
(``huggingface_hub.ModelCard``): YAML front matter with the licence, tags, data sets and a ``model-index`` of the
test results (plus ``confidence_intervals``, which the Hub format has no field for), then the Markdown.
Nothing here talks to the Hub: cards are built and written locally, never pushed, loaded or validated online.

Cards are written to ``reports/model_cards/<name>.md`` (:func:`cards_from_metrics`, the ``model_cards`` stage)
and as ``README.md`` beside the weights (:func:`write_cards_next_to_weights`, at the end of each training
notebook).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from xraylib import config
from xraylib.model_card_sections import (  # noqa: F401  (MITCHELL_SECTIONS: part of this module's interface)
    MITCHELL_SECTIONS, NOT_METRICS, SYNTHETIC_WARNING, as_text, calibration_method, caveats, ci_level, ci_of,
    confidence_of, ethics, evaluation_data, factors, finite, format_value, framework_of, intended_use, is_ci,
    is_kermany, is_number, is_point, metric_items, metric_label, metrics_section, model_details, num, source_of,
    split_warning, table, training_data)

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

_DATASET_IDS = {"synthetic": "xraylib-synthetic", "kermany": "kermany-chest-xray-pneumonia",
                "kermany3": "kermany-chest-xray-pneumonia", "covid_radiography": "covid-19-radiography-database"}
_DATASET_NAMES = {"synthetic": "xraylib synthetic chest X-ray-like images",
                  "kermany": "Chest X-Ray Images (Pneumonia), Kermany et al. 2018",
                  "kermany3": "Chest X-Ray Images (Pneumonia), Kermany et al. 2018 (NORMAL/BACTERIA/VIRUS)",
                  "covid_radiography": "COVID-19 Radiography Database"}
_POINT_ORDER = ("threshold", "sensitivity", "specificity", "precision", "npv", "accuracy", "balanced_accuracy", "f1")
_CLASS_ORDER = ("support", "precision", "recall", "sensitivity", "f1", "specificity")
_COUNTS = ("tp", "fp", "tn", "fn")
_BLOCKS = ("per_class", "confusion_matrix", "calibration", "subgroups", "bootstrap", "seeds", "external",
           "comparisons", "class_names")


# --- Quantitative analyses: every number of a report, in tables ------------------------------------------------------

def _hub(*names: str) -> tuple:
    """Names from ``huggingface_hub``, imported on first use (it is slow to import and not needed elsewhere).

    Its import loads ``tqdm.auto``, which inside a Jupyter kernel without ipywidgets warns "IProgress
    not found"; nothing here shows a progress bar, so that one warning is silenced for the import.
    """
    import warnings

    with warnings.catch_warnings():  # huggingface_hub imports lazily: the attribute access is the import
        warnings.filterwarnings("ignore", message="IProgress not found")
        import huggingface_hub

        return tuple(getattr(huggingface_hub, name) for name in names)


def _flat(row: dict) -> dict:
    """A table row with nested blocks spread into columns: ``{"youden_val": {"sensitivity": x}}`` becomes
    ``{"sensitivity at youden_val": x}`` (interval included); lists of numbers become text."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                if inner == "threshold" or isinstance(v, (dict, list)) and not inner.endswith("_ci"):
                    continue
                name = f"{inner[:-3]} at {key}_ci" if inner.endswith("_ci") else f"{inner} at {key}"
                out[name] = v
        elif isinstance(value, (list, tuple)) and not key.endswith("_ci"):
            out[key] = as_text(value)
        else:
            out[key] = value
    return out


def _columns(rows: dict[str, dict], order: tuple[str, ...]) -> list[str]:
    present = []
    for row in rows.values():
        for key, value in row.items():
            if key in present or key.endswith("_ci") or key in _COUNTS:
                continue
            if is_number(value) or value is None or isinstance(value, str) or isinstance(value, bool):
                present.append(key)
    first = [k for k in order if k in present]
    return first + [k for k in present if k not in first]


def _rows_table(rows: dict[str, dict], first: str, order: tuple[str, ...], level: Any) -> list[str]:
    """A table of ``{row name: {column: value, column_ci: [low, high]}}``; TP/FP/TN/FN merged into one column."""
    rows = {name: _flat(row) for name, row in rows.items() if isinstance(row, dict)}
    if not rows:
        return []
    columns = _columns(rows, order)
    counts = any(all(c in row for c in _COUNTS) for row in rows.values())
    header = [first] + [metric_label(c) for c in columns] + (["TP / FP / TN / FN"] if counts else [])
    body = []
    for name, row in rows.items():
        cells = [str(name)] + [format_value(row.get(c), ci_of(row, c), level) if c in row else "n/a"
                               for c in columns]
        if counts:
            cells.append(" / ".join(num(row.get(c)) for c in _COUNTS))
        body.append(cells)
    return table(header, body)


def _normalise(results: dict) -> dict:
    """The test report, whether given as it is in the metrics JSON or in the old ``headline`` form."""
    results = dict(results or {})
    if "headline" in results or "operating_points" in results:
        old = results
        results = {**old.get("headline", {}), **old.get("operating_points", {})}
        results.update({k: v for k, v in old.items() if k not in ("headline", "operating_points")})
    return results


def _point_note(name: str) -> str:
    if name == "youden_val":
        return "chosen on the validation split (Youden's J), stored with the model"
    if name == "stored_threshold":
        return "the threshold stored with the model"
    match = re.fullmatch(r"original_?([0-9.]+)?", name)
    if match:
        return "the original study's fixed threshold" + (f" {match.group(1)}" if match.group(1) else "")
    return ""


def _report_lines(report: dict, classes: list[str], heading: str) -> list[str]:
    """The quantitative analysis of one evaluation (test split or external set), every interval included."""
    level = confidence_of(report)
    lines = [f"{heading}", ""]
    items = metric_items(report)
    if items:
        lines += table(["Metric", f"Value ({ci_level(level)} CI)"],
                       [[metric_label(k), format_value(v, ci, level)] for k, v, ci in items])
    points = {k: v for k, v in report.items() if is_point(v)}
    if points:
        lines += ["Operating points (one row per decision threshold):", ""]
        lines += _rows_table(points, "Operating point", _POINT_ORDER, level)
        notes = [f"`{k}`: {_point_note(k)}" for k in points if _point_note(k)]
        if notes:
            lines += ["; ".join(notes) + ".", ""]
    if isinstance(report.get("per_class"), dict) and report["per_class"]:
        lines += ["Per class (one class against the rest):", ""]
        lines += _rows_table(report["per_class"], "Class", _CLASS_ORDER, level)
    matrix = report.get("confusion_matrix")
    if isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix):
        names = [str(c) for c in report.get("class_names") or classes]
        names = names if len(names) == len(matrix) else [str(i) for i in range(len(matrix))]
        lines += ["Confusion matrix (rows: true class, columns: predicted class):", ""]
        lines += table(["true \\ predicted"] + names, [[names[i]] + [num(v) for v in row]
                                                        for i, row in enumerate(matrix)])
    calibration = report.get("calibration")
    if isinstance(calibration, dict) and calibration:
        states = {k: v for k, v in calibration.items() if isinstance(v, dict) and k not in ("method", "bootstrap")}
        lines += [f"Calibration of the probabilities before and after recalibration "
                  f"({calibration_method(calibration)}):", ""]
        lines += _rows_table(states, "Probabilities", ("ece", "brier", "log_loss", "slope", "intercept"), level)
    subgroups = report.get("subgroups")
    if isinstance(subgroups, dict) and subgroups:
        lines += ["Subgroups:", ""] + _rows_table(subgroups, "Subgroup", ("n", "roc_auc") + _POINT_ORDER, level)
    lines += _seed_lines(report.get("seeds"))
    lines += _comparison_lines(report.get("comparisons"), level)
    known = set(_BLOCKS) | set(NOT_METRICS) | set(points) | {k for k, _, _ in items} | {f"{k}_ci" for k, _, _ in items}
    other = {k: v for k, v in report.items() if k not in known and not k.endswith("_ci")}
    other.update({k: report[k] for k in NOT_METRICS if k in report})
    if other:
        lines += ["Other reported values: " + "; ".join(f"{k.replace('_', ' ')} {as_text(v)}"
                                                         for k, v in other.items()) + ".", ""]
    return lines


def _p_value(value: Any) -> str:
    return "< 0.001" if finite(value) and value < 0.001 else num(value)


def _comparison_lines(comparisons: Any, level: Any) -> list[str]:
    """Paired comparisons (runs, thresholds, test-time augmentation): one table per list of records."""
    if isinstance(comparisons, list):
        comparisons = {"": comparisons}
    if not isinstance(comparisons, dict):
        return []
    lines = []
    for name, records in comparisons.items():
        records = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
        if not records:
            continue
        keys = list(dict.fromkeys(k for r in records for k in r))
        lows = [k for k in keys if k.endswith("ci_low") and f"{k[:-3]}high" in keys]
        columns = [k for k in keys if k not in lows and k not in {f"{low[:-3]}high" for low in lows}]
        with_ci = next((c for c in columns if c.endswith("difference") or c == "estimate"), None)
        if with_ci is None:  # no estimate to attach the interval to: keep its bounds as columns
            columns, lows = keys, []
        rows = []
        for record in records:
            cells = []
            for column in columns:
                value = record.get(column)
                if column == with_ci and lows:
                    cells.append(format_value(value, [record.get(lows[0]), record.get(f"{lows[0][:-3]}high")], level))
                elif re.search(r"(^|_)p(_|$)|p_value", column):
                    cells.append(_p_value(value))
                else:
                    cells.append(as_text(value))
            rows.append(cells)
        title = f"Paired comparisons{' of ' + str(name).replace('_', ' ') if name else ''}:"
        lines += [title, ""] + table([metric_label(c) for c in columns], rows)
    return lines


def _seed_lines(seeds: Any) -> list[str]:
    if not isinstance(seeds, dict) or not seeds:
        return []
    per_metric = {"": seeds} if "values" in seeds or "mean" in seeds else \
        {k: v for k, v in seeds.items() if isinstance(v, dict)}
    lines = []
    for metric, block in per_metric.items():
        name = metric_label(block.get("metric", metric)) if (block.get("metric") or metric) else "headline metric"
        values = block.get("values")
        listed = (", ".join(f"seed {s} {num(v)}" for s, v in values.items()) if isinstance(values, dict)
                  else as_text(values) if values is not None else "")
        count = len(values) if isinstance(values, (dict, list)) else "n/a"
        sd = block.get("sd")
        sd_text = f"{sd:.2g}" if finite(sd) and 0 < abs(sd) < 0.01 else num(sd)
        lines.append(f"- {name} across {count} training seeds: mean {num(block.get('mean'))}, "
                     f"SD {sd_text}" + (f" ({listed})" if listed else ""))
    return ["Across training seeds (how much the result moves with the seed alone):", ""] + lines + [""]


def _gradcam_entry(gradcam: dict | None, name: str) -> dict:
    entry = ((gradcam or {}).get("models") or {}).get(name)
    return entry if isinstance(entry, dict) else {}


def _gradcam_lines(entry: dict) -> list[str]:
    """The Grad-CAM scores of one model beside their chance levels, ceilings and random baselines."""
    overall = entry.get("overall") if isinstance(entry.get("overall"), dict) else entry
    if not overall or not any(k in overall for k in ("pointing_game", "lung_energy", "topk_iou", "faithfulness")):
        return []
    faith = overall.get("faithfulness") or entry.get("faithfulness")
    rows = []
    for key, label, ref_key, ref_label in (
            ("pointing_game", "pointing game (map peak inside the lesion)", "pointing_game_chance", "chance"),
            ("topk_iou", "top-k IoU with the lesion mask", "topk_iou_ceiling", "ceiling"),
            ("lung_energy", "share of the map inside the lungs", "lung_energy_chance", "chance")):
        if key in overall:
            ref = overall.get(ref_key)
            rows.append([label, format_value(overall[key], overall.get(f"{key}_ci")),
                         f"{ref_label} {num(ref)}" if ref_key in overall else "n/a"])
    if isinstance(faith, dict):
        rows.append(["deletion AUC (faithfulness; lower is better)",
                     format_value(faith.get("deletion_auc"), faith.get("deletion_auc_ci")),
                     f"random maps {num(faith.get('deletion_auc_random'))}"])
        if "difference" in faith:
            rows.append(["deletion AUC, random minus Grad-CAM",
                         format_value(faith["difference"], faith.get("difference_ci")), "0 = no better than random"])
    lines = [f"Grad-CAM on {num(overall.get('images'))} test images (reports/metrics/gradcam.json):", ""]
    lines += table(["Measure", "Value", "Reference"], rows)
    empty, images = overall.get("empty_maps"), overall.get("images")
    if is_number(empty) and empty:
        lines += [f"{num(empty)} of {num(images)} maps were empty (all zero) and explain nothing"
                  + (f"; the target layer's map is {as_text(entry['info'].get('map_size')).replace(', ', 'x')} "
                     "pixels" if isinstance(entry.get("info"), dict) and entry["info"].get("map_size") else "")
                  + ".", ""]
    return lines


# --- The card --------------------------------------------------------------------------------------------------------

def _task(model: dict, data_summary: dict, report: dict) -> str:
    task = model.get("task") or data_summary.get("task")
    if task in config.TASKS:
        return task
    classes = data_summary.get("classes") or []
    return "binary" if len(classes) == 2 or "roc_auc" in report else "multiclass"


def _card_data(name: str, task: str, model: dict, data_summary: dict, report: dict, external: dict):
    EvalResult, ModelCardData = _hub("EvalResult", "ModelCardData")

    source = source_of(data_summary)
    _, library = framework_of(model, task)
    classes = data_summary.get("classes") or []
    task_name = ("Binary classification (" + " vs ".join(map(str, classes)) + ")" if task == "binary"
                 else f"{len(classes)}-class classification")
    results, intervals = [], []

    def add(report: dict, dataset_type: str, dataset_name: str, split: str) -> None:
        level = confidence_of(report)
        for key, value, ci in metric_items(report):
            if key in ("n", "n_positive") or not finite(value):
                continue
            results.append(EvalResult(task_type="image-classification", task_name=task_name,
                                      dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                                      metric_type=key, metric_value=float(value), metric_name=metric_label(key)))
            if is_ci(ci) and all(finite(v) for v in ci):
                intervals.append({"dataset": dataset_type, "split": split, "metric": key, "value": float(value),
                                  "low": float(ci[0]), "high": float(ci[1]), "level": float(level)})
        for point, block in report.items():
            if not is_point(block) or point != _stored_point(report):
                continue
            for key in ("sensitivity", "specificity", "precision", "npv", "f1"):
                value = block.get(key)
                if not finite(value):
                    continue
                results.append(EvalResult(task_type="image-classification", task_name=task_name,
                                          dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                                          metric_type=key, metric_value=float(value), metric_name=metric_label(key),
                                          metric_config=point,
                                          metric_args={"threshold": float(block["threshold"])}
                                          if finite(block.get("threshold")) else None))
                ci = block.get(f"{key}_ci")
                if is_ci(ci) and all(finite(v) for v in ci):
                    intervals.append({"dataset": dataset_type, "split": split, "metric": key, "operating_point": point,
                                      "value": float(value), "low": float(ci[0]), "high": float(ci[1]),
                                      "level": float(level)})

    add(report, _DATASET_IDS.get(source, source), _DATASET_NAMES.get(source, source), "test")
    for set_name, ext in external.items():
        if isinstance(ext, dict):
            add(_normalise(ext), str(set_name), str(set_name), "external")
    tags = ["medical-imaging", "chest-x-ray", "image-classification", "research-only"]
    if data_summary.get("synthetic"):
        tags.append("synthetic-data")
    real_terms = is_kermany(source) or data_summary.get("synthetic")
    extra = {"confidence_intervals": intervals} if intervals else {}
    return ModelCardData(model_name=name, license="mit" if real_terms else "other",
                         license_name=None if real_terms else "mit-code-data-terms-apply",
                         library_name=library, pipeline_tag="image-classification", tags=tags,
                         datasets=[_DATASET_IDS.get(source, source)] if source != "unknown" else None,
                         eval_results=results or None, **extra)


def _stored_point(report: dict) -> str | None:
    points = [k for k, v in report.items() if is_point(v)]
    for preferred in ("stored_threshold", "youden_val"):
        if preferred in points:
            return preferred
    return points[0] if len(points) == 1 else None


def build_model_card(name: str, model: dict, data_summary: dict, results: dict, notes: list[str] | None = None,
                     *, gradcam: dict | None = None) -> ModelCard:
    """Build the model card of one model (offline: nothing is fetched from or sent to the Hub).

    Args:
        name: model name, e.g. ``binary`` or ``densenet121_steplr``.
        model: facts about the model: ``task``, ``framework``, architecture (``backbone``/``arch``), ``image_size``,
            ``parameters``, ``date``, ``version``, ``thresholds``, ``threshold_rule``, ``calibration``, ``training``
            (a dict of training settings) and the like; unknown scalar keys are listed as other facts.
        data_summary: the data stage's summary for the task (``reports/metrics/data_<task>.json``).
        results: the test report as in the metrics JSON (``X`` with ``X_ci``, per-threshold dicts, ``per_class``,
            optional ``calibration``, ``subgroups``, ``bootstrap``, ``seeds``, ``external``), or the older
            ``{"headline": ..., "operating_points" | "per_class": ...}`` form.
        notes: extra caveats or observations.
        gradcam: ``reports/metrics/gradcam.json``; the entry ``models.<name>`` is used when present.

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the Markdown with its YAML front matter.
    """
    (ModelCard,) = _hub("ModelCard")  # noqa: N806 (the class, imported on first use)

    if not isinstance(model, dict) or not isinstance(data_summary, dict) or not isinstance(results, dict):
        raise ValueError(f"model card {name!r}: model, data_summary and results must be dicts, got "
                         f"{type(model).__name__}, {type(data_summary).__name__}, {type(results).__name__}")
    report = _normalise(results)
    if "calibration" not in model and isinstance(report.get("calibration"), dict):
        model = {**model, "calibration": report["calibration"]}
    external = report.get("external") if isinstance(report.get("external"), dict) else {}
    task = _task(model, data_summary, report)
    classes = [str(c) for c in data_summary.get("classes") or []]
    entry = _gradcam_entry(gradcam, name)
    body = [f"# Model card: {name}", ""]
    if data_summary.get("synthetic"):
        body += [f"> {SYNTHETIC_WARNING}", ""]
    warning = split_warning(data_summary)
    if warning:
        body += [f"> {warning}", ""]
    body += model_details(task, model, data_summary)
    body += intended_use(data_summary)
    body += factors(data_summary, report, external)
    body += metrics_section(task, model, report)
    body += evaluation_data(data_summary, report, external)
    body += training_data(task, data_summary, model)
    body += ["## Quantitative analyses", ""]
    body += _report_lines(report, classes, "### Internal test split")
    for set_name, ext in external.items():
        if isinstance(ext, dict):
            body += _report_lines(_normalise(ext), classes, f"### External set: {set_name}")
    grad = _gradcam_lines(entry)
    if grad:
        body += ["### Grad-CAM", ""] + grad
    body += ethics(task, data_summary)
    body += caveats(task, data_summary, external, entry, list(notes or []))
    data = _card_data(name, task, model, data_summary, report, external)
    text = "---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(body).rstrip() + "\n"
    return ModelCard(text)


def render_model_card(name: str, model: dict, data_summary: dict, results: dict, notes: list[str] | None = None,
                      *, gradcam: dict | None = None) -> str:
    """The card as text (YAML front matter + Markdown); arguments as :func:`build_model_card`."""
    return str(build_model_card(name, model, data_summary, results, notes, gradcam=gradcam))


def write_model_card(name: str, model: dict, data_summary: dict, results: dict, notes: list[str] | None = None,
                     out_dir: Path | None = None, *, gradcam: dict | None = None) -> Path:
    """Write ``<out_dir>/<name>.md`` (default ``reports/model_cards``) and return its path."""
    folder = Path(out_dir) if out_dir else config.REPORTS_DIR / "model_cards"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text(render_model_card(name, model, data_summary, results, notes, gradcam=gradcam))
    return path


def write_card_next_to_model(model_dir: str | Path, card: ModelCard | str) -> Path:
    """Write ``card`` as ``<model_dir>/README.md``, where the Hugging Face convention puts a model's card.

    Raises:
        FileNotFoundError: ``model_dir`` is not an existing folder.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist; expected the folder that holds the weights "
                                "(e.g. models/binary or models/multiclass/<run>)")
    path = folder / "README.md"
    path.write_text(str(card))
    return path


# --- From the metrics files ------------------------------------------------------------------------------------------

def _file_date(path: Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.timezone.utc)
    return f"{stamp.date().isoformat()} (modification date of {path.name})"


def _version(weights: Path | None) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = f"xraylib {version('xraylib')}"
    except PackageNotFoundError:  # a source checkout that was never installed
        text = "xraylib (version not installed)"
    if weights is not None and weights.is_file():
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        text += f"; weights {weights.name} sha256 {digest}"
    return text


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the stage that writes it") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}; expected a JSON object")
    return value


def _with_blocks(report: dict, *sources: dict) -> dict:
    """The report plus the optional blocks (bootstrap, calibration, ...) that a metrics file keeps beside it."""
    report = dict(report)
    for source in sources:
        for key in ("bootstrap", "calibration", "subgroups", "seeds", "external", "comparisons"):
            if key not in report and isinstance(source.get(key), (dict, list)):
                report[key] = source[key]
    return report


class _CardInputs(NamedTuple):
    """What :func:`build_model_card` needs for one model, and the folder of its weights (``None``: unknown)."""

    name: str
    model_dir: Path | None
    model: dict
    data_summary: dict
    report: dict


def _binary_inputs(metrics_dir: Path, model_dir: Path | None) -> list[_CardInputs]:
    """The binary model's card inputs from ``binary.json``, ``data_binary.json`` and ``<model_dir>/model.json``.

    Returns an empty list when ``binary.json`` is missing or empty. Reads no other task's files.
    """
    binary = _read_json(metrics_dir / "binary.json")
    if not binary:
        return []
    saved = _read_json(model_dir / "model.json") if model_dir else {}
    facts = {"task": "binary", "framework": saved.get("framework", "keras"),
             **{k: saved[k] for k in ("keras_version", "threshold_rule", "weights", "positive_class") if k in saved},
             **(binary.get("model") or {}), "thresholds": binary.get("threshold") or {},
             "date": _file_date(metrics_dir / "binary.json"),
             "version": _version(model_dir / "model.keras" if model_dir else None)}
    if "validation_threshold" in saved:  # site calibration replaced the validation threshold in model.json
        facts["site_threshold"] = saved.get("threshold")
    if isinstance(saved.get("training"), dict):
        facts["training"] = {**saved["training"], **(facts.get("training") or {})}
    if isinstance(binary.get("data"), dict):
        facts["data_splits"] = binary["data"]
    if isinstance(binary.get("calibration"), dict):
        facts.setdefault("calibration", binary["calibration"])
    summary = _read_json(metrics_dir / "data_binary.json") or (
        {"source": saved["data_source"], "synthetic": saved["data_source"] == "synthetic",
         "classes": saved.get("class_names") or []} if saved.get("data_source") else {})
    return [_CardInputs("binary", model_dir, facts, summary, _with_blocks(binary.get("test") or {}, binary))]


def _multiclass_inputs(metrics_dir: Path, model_dir: Path | None, *,
                       source: Path | None = None) -> list[_CardInputs]:
    """One card's inputs per run in ``multiclass.json`` (with ``data_multiclass.json``); runs in ``<model_dir>/<run>``.

    ``source`` reads another document of the same shape instead (one run's, :func:`write_run_card`). Reads no other
    task's files.
    """
    source = source or metrics_dir / "multiclass.json"
    multiclass = _read_json(source)
    data_multiclass = _read_json(metrics_dir / "data_multiclass.json")
    inputs = []
    for run, result in (multiclass.get("runs") or {}).items():
        run_dir = model_dir / run if model_dir else None
        facts = {"task": "multiclass", "framework": "torch",
                 **{k: v for k, v in result.items() if k not in ("test", "external") and not isinstance(v, list)},
                 "date": _file_date(source),
                 "version": _version(run_dir / "best.pt" if run_dir else None)}
        if isinstance(result.get("calibration"), dict):
            facts["calibration"] = result["calibration"]
        summary = {**{k: multiclass[k] for k in ("synthetic", "classes") if k in multiclass}, **data_multiclass}
        report = _with_blocks(result.get("test") or {}, result)
        comparisons = multiclass.get("comparisons")
        if "comparisons" not in report and isinstance(comparisons, list):
            mine = [r for r in comparisons if isinstance(r, dict) and run in (r.get("run_a"), r.get("run_b"))]
            report["comparisons"] = mine or comparisons
        inputs.append(_CardInputs(run, run_dir, facts, summary, _with_blocks(report, multiclass)))
    return inputs


_INPUTS = {"binary": _binary_inputs, "multiclass": _multiclass_inputs}


def cards_from_metrics(metrics_dir: Path | None = None, out_dir: Path | None = None, *,
                       models_dir: Path | None = None, next_to_weights: bool = False) -> list[Path]:
    """Write one card per trained model from the metrics the training and Grad-CAM notebooks wrote.

    Reads ``binary.json``, ``multiclass.json``, ``gradcam.json`` and ``data_<task>.json`` in ``metrics_dir``
    (default ``reports/metrics``); a model whose metrics file is missing is skipped. Writes
    ``<out_dir>/<name>.md`` (default ``reports/model_cards``).

    Args:
        metrics_dir: folder of the metrics JSONs (default ``config.METRICS_DIR``).
        out_dir: folder of the cards (default ``reports/model_cards``).
        models_dir: the models folder (``models``); when given, ``binary/model.json`` adds the training
            settings and each model folder's weights give the version hash.
        next_to_weights: also write each card as ``README.md`` into its model folder (``models_dir/binary``,
            ``models_dir/multiclass/<run>``) when that folder exists.

    Returns:
        The paths written, cards first and then each model folder's ``README.md``.
    """
    folder = Path(metrics_dir) if metrics_dir else config.METRICS_DIR
    target = Path(out_dir) if out_dir else config.REPORTS_DIR / "model_cards"
    models = Path(models_dir) if models_dir else None
    gradcam = _read_json(folder / "gradcam.json")
    written, beside = [], []
    for task, inputs_of in _INPUTS.items():
        for item in inputs_of(folder, models / task if models else None):
            card = build_model_card(item.name, item.model, item.data_summary, item.report, gradcam=gradcam)
            target.mkdir(parents=True, exist_ok=True)
            path = target / f"{item.name}.md"
            path.write_text(str(card))
            written.append(path)
            if next_to_weights and item.model_dir is not None and item.model_dir.is_dir():
                beside.append(write_card_next_to_model(item.model_dir, card))
    return written + beside


def write_cards_next_to_weights(task: str, model_dir: str | Path, metrics_dir: str | Path | None = None) -> list[Path]:
    """Write the cards of one task's models as ``README.md`` beside their weights, at the end of its training.

    For ``binary``: ``<model_dir>/README.md`` from ``<metrics_dir>/binary.json``, ``data_binary.json`` and
    ``<model_dir>/model.json``. For ``multiclass``: ``<model_dir>/<run>/README.md`` for each run in
    ``<metrics_dir>/multiclass.json`` whose folder exists. Nothing of the other task is read or written, so the
    training stage that calls this writes only inside its own model folder. The cards have no Grad-CAM section
    (``gradcam.json`` is written by a later stage); :func:`cards_from_metrics` includes it.

    Args:
        task: ``binary`` or ``multiclass``.
        model_dir: the task's model folder (``models/binary`` or ``models/multiclass``).
        metrics_dir: folder of the metrics JSONs (default ``config.METRICS_DIR``, which ``XRAYLIB_REPORTS``
            redirects).

    Returns:
        The ``README.md`` paths written.

    Raises:
        ValueError: ``task`` is not one of ``config.TASKS``.
        FileNotFoundError: ``model_dir`` or the task's metrics JSON does not exist.
    """
    if task not in config.TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(config.TASKS)}")
    folder = config.resolve(model_dir)  # relative to the project, as every path in params.yaml
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist; expected the folder the {task} training "
                                f"wrote its weights to (models/{task})")
    metrics = config.resolve(metrics_dir) if metrics_dir else config.METRICS_DIR
    if not (metrics / f"{task}.json").is_file():
        raise FileNotFoundError(f"{metrics / f'{task}.json'} not found; write the test metrics of the {task} model "
                                "before its cards")
    return [write_card_next_to_model(item.model_dir, build_model_card(item.name, item.model, item.data_summary,
                                                                      item.report))
            for item in _INPUTS[task](metrics, folder) if item.model_dir.is_dir()]


def write_run_card(document: str | Path, model_dir: str | Path, metrics_dir: str | Path | None = None) -> list[Path]:
    """Write the card of one multi-class run as ``README.md`` beside its weights, from that run's own metrics.

    What the run's DVC stage (``train_run@<run>``, :mod:`xraylib.torch_runs`) writes: ``document`` is its metrics
    file (``{"synthetic", "classes", "runs": {run: entry}}``, the shape of ``multiclass.json`` with one run), so the
    card has no comparison with the other runs and no Grad-CAM section; ``reports/model_cards`` (the
    ``model_cards`` stage) has both.

    Raises:
        FileNotFoundError: ``document`` does not exist.
    """
    document = config.resolve(document)
    if not document.is_file():
        raise FileNotFoundError(f"{document} not found; write the run's test metrics before its card")
    metrics = config.resolve(metrics_dir) if metrics_dir else config.METRICS_DIR
    folder = config.resolve(model_dir)
    return [write_card_next_to_model(item.model_dir, build_model_card(item.name, item.model, item.data_summary,
                                                                      item.report))
            for item in _multiclass_inputs(metrics, folder, source=document) if item.model_dir.is_dir()]
