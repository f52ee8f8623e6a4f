"""One multi-class run from training to its test figures, and the study over the finished runs (notebook 04).

Each run of ``train_multiclass.runs`` is a DVC stage of its own (``dvc.yaml``: ``train_run``, a ``foreach`` over the
runs; ``xraylib train-run NAME``), so ``dvc repro`` re-runs only the runs whose settings, data or code changed and
DVC caches each run's model and metrics on their own. :func:`run` does one run's whole job:

1. train (or reload a finished, identical run) with :func:`xraylib.torch_train.train`;
2. fit the temperature on the validation split (``calibration.json`` beside ``best.pt``);
3. evaluate ``best.pt`` on the test split: ``test_predictions.csv`` and the run's metrics document ``metrics.json``
   beside it (the shape of ``multiclass.json`` with this run only, no timings: the same run gives the same bytes), and
   a one-row headline ``reports/metrics/multiclass_runs/<run>.json`` (test accuracy, macro-F1 and macro-AUC,
   training seconds; :func:`headline`) that ``dvc metrics show`` and ``dvc exp show`` print;
4. with ``seeds`` > 1, train and evaluate the further seeds (``<run>/seed<k>/``) and add their spread;
5. write the run's model card as ``README.md`` beside ``best.pt``.

Notebook 04 (the ``train_multiclass`` stage) then collects the runs with :func:`ensure_all` (it reads what the run
stages wrote; a run that is missing or was made with other settings, data or training code is done there, with a
message, so the notebook also works on its own), draws the curves and confusion matrices, compares the runs and writes
``multiclass.json``: the summary comes out of one place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from xraylib import config, data, evaluation, model_card, outputs, torch_evaluate, torch_train

RUNS_METRICS = "multiclass_runs"  # reports/metrics/<this>/<run>.json: one headline row per run (DVC metrics)
DOCUMENT = "metrics.json"  # beside best.pt: the run's entry of multiclass.json, its classes and provenance
PREDICTIONS = "test_predictions.csv"  # beside best.pt: the test split's labels, predictions and probabilities
# headline name: (test figure, with its interval); as in summary.json, accuracy without one (the table's width)
HEADLINE_KEYS = {"acc": ("accuracy", False), "f1": ("macro_f1", True), "auc": ("macro_auc_ovr", True)}
HEADLINE_DIGITS = 4  # as summary.json


@dataclass(frozen=True)
class Evaluation:
    """How every run is evaluated (the study keys of ``train_multiclass``)."""

    batch_size: int
    n_resamples: int
    recalibration: str
    seeds: int
    seed: int

    @classmethod
    def from_params(cls, params: dict) -> "Evaluation":
        spec = config.section(params, "train_multiclass")
        return cls(int(spec["eval_batch_size"]), int(spec["n_resamples"]), str(spec["recalibration"]),
                   int(spec["seeds"]), int(params["seed"]))


@dataclass
class Outcome:
    """A finished run as notebook 04 uses it."""

    name: str
    entry: dict  # the run's entry of multiclass.json (torch_evaluate.run_entry)
    history: pd.DataFrame
    predictions: pd.DataFrame  # test split: path, label, predicted, prob_<class>...
    classes: list[str]
    timing: dict
    card: Path | None

    @property
    def report(self) -> dict:
        """The test report in the shape of :func:`xraylib.metrics.multiclass_report` (for the evaluation tables)."""
        return {**self.entry["test"], "class_names": list(self.classes)}


def metrics_path(name: str, metrics_dir: str | Path | None = None) -> Path:
    """The run's headline ``reports/metrics/multiclass_runs/<run>.json`` (``metrics_dir`` default
    ``config.METRICS_DIR``)."""
    root = config.resolve(metrics_dir) if metrics_dir is not None else config.METRICS_DIR
    return root / RUNS_METRICS / f"{name}.json"


def headline(entry: dict, timing: dict, synthetic: bool | None = None) -> dict:
    """One short row per run for ``dvc metrics show`` / ``dvc exp show``: test accuracy ``acc``, macro-F1 ``f1`` and
    macro one-vs-rest AUC ``auc``, the last two with their 95 % intervals (``_lo``, ``_hi``), and the training
    seconds ``train_s`` (all epochs, also those a resumed or reloaded run restored). The names are those of ``summary.json`` (:mod:`xraylib.headline`), so that ``dvc metrics
    show`` stays one table under 200 columns; every interval is in ``metrics.json``."""
    test = entry["test"]
    row = {}
    for short, (key, interval) in HEADLINE_KEYS.items():
        row[short] = test.get(key)
        if interval:
            row[f"{short}_lo"], row[f"{short}_hi"] = test.get(f"{key}_ci") or (None, None)
    return {**row, **({"synthetic": int(bool(synthetic))} if synthetic is not None else {}),
            "train_s": timing.get("train_seconds_total", timing.get("train_seconds"))}


def provenance(cfg: torch_train.RunConfig, manifest: pd.DataFrame, evaluation_: Evaluation) -> dict:
    """What a run's outputs were made from: the settings that decide its result, the evaluation settings, a hash of
    the manifest (every split) and of the training code. :func:`ensure_all` reuses the outputs only when this is
    unchanged, so a run made by older training code is redone, as DVC would redo its stage."""
    manifest_hash = torch_train.data_fingerprint(manifest, data.class_names(manifest), splits=data.SPLITS)
    return {"run": json.loads(json.dumps(cfg.result_settings())), "evaluation": dataclasses.asdict(evaluation_),
            "manifest": manifest_hash, "code": torch_train.code_fingerprint()}


def run(cfg: torch_train.RunConfig, manifest: pd.DataFrame, model_dir: str | Path, evaluation_: Evaluation, *,
        checkpoint_dir: str | Path | None = None, resume: bool = True, data_source: str = "",
        synthetic: bool | None = None, metrics_dir: str | Path | None = None) -> Outcome:
    """Train, recalibrate and evaluate one run; write its outputs (module docstring) and return them.

    Args:
        cfg: the run (:func:`xraylib.torch_train.configs_from_params`).
        manifest: the multi-class manifest with its patient-level splits.
        model_dir: the runs' folder (``models/multiclass``); this run writes ``<model_dir>/<run>/`` only.
        evaluation_: :class:`Evaluation`.
        checkpoint_dir: the runs' resume folder (``<checkpoint_dir>/<run>/last.pt``).
        resume: continue or reload from ``last.pt`` when settings, data and code match.
        data_source: stored in the checkpoint (the manifest's source).
        synthetic: whether the data are the synthetic demo (stored in the metrics).
        metrics_dir: default ``config.METRICS_DIR``.
    """
    model_root = config.resolve(model_dir)
    ckpt_root = config.resolve(checkpoint_dir) if checkpoint_dir is not None else model_root
    result = torch_train.train(cfg, manifest, model_root / cfg.name, resume=resume,
                               checkpoint_dir=ckpt_root / cfg.name, data_source=data_source)
    recalibration = (torch_evaluate.fit_recalibration(result.best_path, manifest, batch_size=evaluation_.batch_size,
                                                      seed=evaluation_.seed)
                     if evaluation_.recalibration == "temperature" else None)
    report, predictions = _evaluate(result.best_path, manifest, evaluation_, recalibration)
    outputs.write_table(predictions, result.out_dir / PREDICTIONS)
    seeds = None
    if evaluation_.seeds > 1:
        further = torch_train.train_seeds([cfg], manifest, model_root, evaluation_.seeds, resume=resume,
                                          checkpoint_dir=ckpt_root, data_source=data_source).get(cfg.name, {})
        by_seed = {cfg.seed: report, **{seed: _evaluate(r.best_path, manifest, evaluation_, None)[0]
                                        for seed, r in further.items()}}
        seeds = torch_evaluate.seed_summary({cfg.name: by_seed})[cfg.name]
    entry = torch_evaluate.run_entry(result, report, seeds)
    document = {**({"synthetic": bool(synthetic)} if synthetic is not None else {}),
                "classes": list(result.class_names), "runs": {cfg.name: entry},
                "provenance": provenance(cfg, manifest, evaluation_)}
    path = outputs.write_json(document, result.out_dir / DOCUMENT)
    outputs.write_json(headline(entry, result.extra, synthetic), metrics_path(cfg.name, metrics_dir),
                       digits=HEADLINE_DIGITS)
    cards = model_card.write_run_card(path, model_root, metrics_dir)
    return Outcome(cfg.name, entry, result.history, predictions, list(result.class_names), result.extra,
                   cards[0] if cards else None)


def _evaluate(checkpoint: Path, manifest: pd.DataFrame, evaluation_: Evaluation,
              recalibration: dict | None) -> tuple[dict, pd.DataFrame]:
    return torch_evaluate.evaluate_split(checkpoint, manifest, "test", batch_size=evaluation_.batch_size,
                                         n_resamples=evaluation_.n_resamples, seed=evaluation_.seed,
                                         recalibration=recalibration)


def load(cfg: torch_train.RunConfig, manifest: pd.DataFrame, model_dir: str | Path, evaluation_: Evaluation, *,
         metrics_dir: str | Path | None = None) -> Outcome | None:
    """The finished run as its stage wrote it, or ``None`` when something is missing or was made from other
    settings, evaluation settings, data or training code (:func:`provenance`)."""
    run_dir = config.resolve(model_dir) / cfg.name
    needed = [run_dir / DOCUMENT, run_dir / "best.pt", run_dir / "history.csv", run_dir / PREDICTIONS]
    if not all(p.is_file() for p in needed):
        return None
    document = json.loads((run_dir / DOCUMENT).read_text())
    if document.get("provenance") != provenance(cfg, manifest, evaluation_) or cfg.name not in document.get("runs", {}):
        return None
    card, row = run_dir / "README.md", metrics_path(cfg.name, metrics_dir)
    timing = {"train_seconds_total": json.loads(row.read_text()).get("train_s")} if row.is_file() else {}
    # pandas reads floats back exactly (round trip; to_csv wrote the shortest exact repr)
    return Outcome(cfg.name, document["runs"][cfg.name], pd.read_csv(run_dir / "history.csv"),
                   pd.read_csv(run_dir / PREDICTIONS), list(document["classes"]), timing,
                   card if card.is_file() else None)


def ensure_all(configs: Sequence[torch_train.RunConfig], manifest: pd.DataFrame, model_dir: str | Path,
               evaluation_: Evaluation, *, checkpoint_dir: str | Path | None = None, resume: bool = True,
               data_source: str = "", synthetic: bool | None = None,
               metrics_dir: str | Path | None = None) -> dict[str, Outcome]:
    """Every run, in order: loaded as its DVC stage left it (:func:`load`), else done here (:func:`run`).

    Under ``dvc repro`` the ``train_run@<run>`` stages ran first, so nothing is trained here; opened on its own,
    notebook 04 trains what is missing (a line says which run and why).
    """
    outcomes = {}
    for cfg in configs:
        outcome = load(cfg, manifest, model_dir, evaluation_, metrics_dir=metrics_dir)
        if outcome is None:
            print(f"{cfg.name}: no finished run with these settings, data and code in "
                  f"{config.relative_to_project(config.resolve(model_dir) / cfg.name)}; running it here "
                  f"(dvc repro runs it as the stage train_run@{cfg.name})", flush=True)
            outcome = run(cfg, manifest, model_dir, evaluation_, checkpoint_dir=checkpoint_dir, resume=resume,
                          data_source=data_source, synthetic=synthetic, metrics_dir=metrics_dir)
        outcomes[cfg.name] = outcome
    return outcomes


def compare(outcomes: dict[str, Outcome], manifest: pd.DataFrame, evaluation_: Evaluation) -> pd.DataFrame:
    """Every pair of runs on the same test images (:func:`xraylib.evaluation.compare_runs`)."""
    first = next(iter(outcomes.values()))
    classes = first.classes
    labels = first.predictions["label"].map({c: k for k, c in enumerate(classes)}).to_numpy()
    probs = {name: o.predictions[[f"prob_{evaluation.safe_column(c)}" for c in classes]].to_numpy()
             for name, o in outcomes.items()}
    groups = torch_evaluate.split_groups(manifest, first.predictions["path"])
    return evaluation.compare_runs(labels, probs, groups=groups, n_resamples=evaluation_.n_resamples,
                                   seed=evaluation_.seed)
