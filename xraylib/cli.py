"""The ``xraylib`` command line: pipeline steps and model tools.

``xraylib --help`` lists the commands; each has its own ``--help``. The
framework commands (``evaluate``, ``predict``) import TensorFlow or PyTorch only
after they know which one the model needs, never both in one process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

from xraylib import __version__, config, errors

NOTEBOOKS = {
    "explore": "01_explore.ipynb",
    "preprocess": "02_preprocess.ipynb",
    "train_binary": "03_train_binary.ipynb",
    "train_multiclass": "04_train_multiclass.ipynb",
    "gradcam": "05_gradcam.ipynb",
}
KAGGLE_DATASETS = {
    "kermany": "paultimothymooney/chest-xray-pneumonia",
    "covid_radiography": "tawsifurrahman/covid19-radiography-database",
}


def _overrides(args: argparse.Namespace) -> tuple[dict, str]:
    """``{dotted key: value}`` of ``--profile NAME`` then ``--set key=value``, and where they come from (for errors)."""
    from xraylib import schema

    overrides = profile_overrides(args.profile) if args.profile else {}
    overrides.update(schema.parse_override(text) for text in args.set or [])
    source = " + ".join([Path(args.params).name if args.params else "params.yaml",
                         *([f"profiles/{args.profile}.yaml"] if args.profile else []), *(["--set"] if args.set else [])])
    return overrides, source


def _validated(args: argparse.Namespace, overrides: dict, source: str) -> dict:
    from xraylib import schema

    params = schema.apply_overrides(config.load_params(args.params, validate=False), overrides)
    schema.validate_params(params, source=source)
    return params


def load_params(args: argparse.Namespace) -> dict:
    """params.yaml (or ``--params FILE``) with ``--profile NAME`` and ``--set key=value`` applied, validated.

    The one way every command reads its parameters; a run outside DVC changes a
    value here instead of editing params.yaml.
    """
    return _validated(args, *_overrides(args))


def cmd_synthesize(args: argparse.Namespace) -> int:
    from xraylib import synthetic

    params = load_params(args)
    spec = config.section(params, "synthesize")
    out = config.user_path(args.out) if args.out else config.SYNTHETIC_DIR
    for task in config.TASKS:
        frame = synthetic.generate(out, task, image_size=int(spec["image_size"]),
                                   difficulty=float(spec["difficulty"]), seed=int(params["seed"]),
                                   n_patients=synthetic.scaled_patients(task, spec["patients_scale"][task]),
                                   overwrite=True)
        print(f"synthetic {task}: {len(frame)} images of {frame['patient_id'].nunique()} patients -> {out}")
    ext = spec["external"]
    frame = synthetic.generate_external(out, n_patients=int(ext["patients_per_class"]),
                                        image_size=int(spec["image_size"]), difficulty=float(spec["difficulty"]),
                                        seed=int(params["seed"]), gamma=float(ext["gamma"]), frame=float(ext["frame"]))
    print(f"synthetic external site: {len(frame)} images of {frame['patient_id'].nunique()} patients -> "
          f"{out / synthetic.EXTERNAL_ROOT}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from xraylib import data

    params = load_params(args)
    out_dir = config.user_path(args.out) if args.out else config.PROCESSED_DIR / args.task
    with warnings.catch_warnings():  # the scan's warnings are in the summary, printed once below
        warnings.simplefilter("ignore", UserWarning)
        summary = data.build_manifest(args.task, config.section(params, "data"), int(params["seed"]), out_dir=out_dir)
    if not args.out:  # the pipeline's own run: publish the summary as DVC metrics
        from xraylib import outputs

        outputs.write_json({k: v for k, v in summary.items() if k != "warnings"},
                           config.METRICS_DIR / f"data_{args.task}.json")
    print(f"{args.task}: {summary['images']} images, {summary['patients']} patients, "
          f"{summary['quarantined']} quarantined (see {config.relative_to_project(out_dir / 'quarantine.csv')}), "
          f"{summary['label_conflicts']} in label conflicts, {summary['nested_images']} from subfolders, "
          f"leakage: {summary['leakage_patients']} patients / {summary['leakage_identical_files']} files")
    for note in summary["warnings"]:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def notebook_parameters(stage: str, params: dict, notebook: Path) -> dict:
    """Values for a notebook's ``parameters`` cell, looked up in params.yaml.

    Each parameter the notebook declares is taken from the stage's section, then
    from the shared ``data`` section, then from the top level (``seed``). Every one
    must be found: the notebook's own values are never used in its place.

    Raises:
        KeyError: params.yaml has no section ``stage`` or ``data``.
        ValueError: a declared parameter is in none of those places.
    """
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    scopes = [config.section(params, stage), config.section(params, "data"), params]
    values = {}
    for name in declared:
        for scope in scopes:
            if name in scope:
                values[name] = scope[name]
                break
    missing = [name for name in declared if name not in values]
    if missing:
        raise ValueError(f"{notebook.name} declares parameter(s) {missing} that params.yaml does not define (looked "
                         f"in {stage}, data and the top level); add them to params.yaml or remove them from the "
                         "notebook's parameters cell")
    return values


def _exit_with_caller(poll_seconds: float = 1.0) -> None:
    """End this process when the process that started it (or that one's parent) is gone.

    ``dvc repro`` runs a stage as ``dvc -> sh -c -> xraylib notebook`` (or ``xraylib train-run``); when
    ``dvc`` is killed, the shell and this process would otherwise run on and keep writing outputs (a run
    stage would finish training, and the next ``dvc repro`` reload it instead of resuming). The notebook
    kernel watches this process in turn (ipykernel's parent
    poller, ``JPY_PARENT_PID``), so killing ``dvc`` leaves no orphan writer.
    """
    import os
    import threading
    import time

    def ancestors() -> list[int]:
        chain, pid = [], os.getpid()
        for _ in range(2):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            if pid <= 1:
                break
            chain.append(pid)
        return chain

    watched = ancestors()
    if not watched:  # no /proc (macOS) or started by init: nothing to watch
        return

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        parent = watched[0]
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent or not all(alive(pid) for pid in watched):
                print("xraylib: the calling process ended; stopping this stage and its notebook kernel",
                      file=sys.stderr, flush=True)
                os._exit(143)

    threading.Thread(target=watch, name="xraylib-exit-with-caller", daemon=True).start()


# Notebook parameters naming where a stage writes (not what it reads): `notebook --out DIR` moves them below DIR.
OUTPUT_PARAMETERS = ("model_dir", "checkpoint_dir")


def _without_cell_markers(record) -> bool:
    """Logging filter: papermill's streamed cell output without its per-cell banners and set-up lines."""
    return not str(record.msg).startswith(("Executing Cell", "Ending Cell", "Executing notebook with kernel",
                                           "Input Notebook:", "Output Notebook:", "Working directory:"))


def cmd_notebook(args: argparse.Namespace) -> int:
    import os

    params = load_params(args)
    source = config.NOTEBOOKS_DIR / NOTEBOOKS[args.stage]
    values = notebook_parameters(args.stage, params, source)
    previous_reports = os.environ.get(config.REPORTS_ENV)
    if args.out:  # the kernel inherits the environment: its config.REPORTS_DIR is DIR
        out = config.user_path(args.out)
        os.environ[config.REPORTS_ENV] = str(out)
        values.update({key: str(out / key.removesuffix("_dir")) for key in OUTPUT_PARAMETERS if key in values})
    try:
        return _execute_notebook(args, source, values)
    finally:
        if previous_reports is None:
            os.environ.pop(config.REPORTS_ENV, None)
        else:
            os.environ[config.REPORTS_ENV] = previous_reports


def _execute_notebook(args: argparse.Namespace, source: Path, values: dict) -> int:
    import logging
    import os

    import papermill

    root = config.project_root()
    target = config.REPORTS_DIR / "notebooks" / NOTEBOOKS[args.stage]
    target.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits this environment: it works in this project (also in a DVC temporary
    # workspace) and imports this project's copy of xraylib, not whichever copy is installed.
    os.environ[config.PROJECT_ENV] = str(root)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    _exit_with_caller()
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        for noisy in ("traitlets", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("papermill").addFilter(_without_cell_markers)
    try:
        papermill.execute_notebook(str(source), str(target), parameters=values, cwd=str(config.NOTEBOOKS_DIR),
                                   kernel_name=args.kernel, progress_bar=False, log_output=not args.quiet)
    except papermill.PapermillExecutionError as err:
        if errors.debug_requested(args.debug):
            raise
        raise notebook_failure(err, source, target) from None
    record = record_environment(args.stage, {k: v for k, v in values.items() if "thread" in k})
    print(f"executed {source.name} -> {config.relative_to_project(target)} "
          f"(machine and settings in {config.relative_to_project(record)})")
    return 0


# Exceptions that, raised in a notebook cell, mean the input was wrong (xraylib raises these with a message
# for the user) rather than a bug: the stage exits with status 2 instead of 1.
NOTEBOOK_INPUT_ERRORS = frozenset({"ValueError", "KeyError", "FileNotFoundError", "PermissionError", "ParamsError",
                                   "ImageReadError", "ModelFileError", "WeightsUnavailableError", "IsADirectoryError"})


def notebook_failure(err, source: Path, target: Path) -> errors.StageError:
    """One line for an exception raised in a notebook cell (papermill's ``PapermillExecutionError``).

    The executed notebook, which papermill writes with the failing cell's full
    traceback, is named so the user can open it; the traceback is not printed.
    """
    evalue = errors.one_line(Exception(err.evalue)) if err.evalue else ""
    return errors.StageError(
        f"{source.name} stopped in cell [{err.exec_count}]: {err.ename}: {evalue} (the executed notebook with the "
        f"traceback: {config.relative_to_project(target)}; --debug prints it)",
        input_error=err.ename in NOTEBOOK_INPUT_ERRORS)


def record_environment(stage: str, settings: dict) -> Path:
    """Add this stage's machine, thread settings and library versions to ``reports/metrics/environment.json``.

    A provenance record, not a pipeline output: it is not a DVC metric and no
    stage depends on it; each notebook stage replaces its own entry.
    """
    from xraylib import numerics

    path = config.METRICS_DIR / "environment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        document = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        document = {}
    document[stage] = numerics.describe({"settings": settings})
    path.write_text(json.dumps(dict(sorted(document.items())), indent=2) + "\n")
    return path


def sync_outputs(stage: str) -> Path:
    """Copy outputs of the executed ``reports/notebooks`` copy into ``notebooks/`` (for nbval).

    Cells are matched by id; papermill's injected-parameters cell and its metadata
    are dropped, so the committed notebook keeps its own ``parameters`` cell.
    """
    import nbformat

    source = config.NOTEBOOKS_DIR / NOTEBOOKS[stage]
    executed = config.REPORTS_DIR / "notebooks" / NOTEBOOKS[stage]
    if not executed.is_file():
        raise FileNotFoundError(f"{executed} not found; run `dvc repro {stage}` first")
    nb = nbformat.read(source, as_version=4)
    ran = [c for c in nbformat.read(executed, as_version=4).cells
           if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    done = {c.get("id"): c for c in ran}
    changed = [c.get("id") for c in nb.cells if c.get("id") not in done or done[c["id"]].source != c.source]
    if changed or len(ran) != len(nb.cells):
        raise ValueError(f"{source.name} differs from the executed {executed.name} (cells {changed or 'added/removed'}); "
                         f"run `dvc repro {stage}` first, then sync its outputs")
    failed = [cid for cid, c in done.items() if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    if failed:
        raise ValueError(f"{executed.name} has errors in cells {failed}; fix them and re-run `dvc repro {stage}` "
                         "before copying its outputs")
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("id") in done:
            cell.outputs = done[cell["id"]].get("outputs", [])
            cell.execution_count = done[cell["id"]].get("execution_count")
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, source)
    return source


def cmd_sync_outputs(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.stages) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(f"unknown notebook stage(s) {unknown}; expected some of {list(NOTEBOOKS)}")
    stages = args.stages or list(NOTEBOOKS)
    for stage in stages:
        print(f"updated outputs of {config.relative_to_project(sync_outputs(stage))}")
    if args.no_dvc_commit:
        return 0
    # Only the outputs of the notebooks changed (sync_outputs checked the cell sources), so the stages need no
    # re-run: record the notebooks' new hashes in dvc.lock, which would otherwise be stale.
    beside = Path(sys.executable).parent / "dvc"  # this environment's dvc, also when it is not on PATH
    try:
        done = subprocess.run([str(beside) if beside.is_file() else "dvc", "commit", "--force", *stages],
                              cwd=config.project_root(), capture_output=True, text=True)
        failure = done.stderr.strip().splitlines()[-1:] if done.returncode else None
    except OSError as err:
        failure = [str(err)]
    if failure is not None:
        print(f"warning: `dvc commit --force {' '.join(stages)}` failed ({failure}); "
              "run it yourself so that dvc.lock records the updated notebooks", file=sys.stderr)
    else:
        print(f"dvc.lock records the updated notebooks (dvc commit --force {' '.join(stages)})")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from xraylib import headline

    path = headline.write_summary()
    print(f"wrote {config.relative_to_project(path)}: {json.loads(path.read_text())}")
    return 0


def cmd_train_multiclass(args: argparse.Namespace) -> int:
    """Train the multi-class runs of params.yaml outside the notebook: one process, or one per device under
    ``torchrun`` (:mod:`xraylib.torch_distributed`). Finished runs land where the run stages look for them
    (``checkpoint_dir``), so ``dvc repro`` afterwards reloads them (``train_run@<run>``) and evaluates."""
    from xraylib import data, torch_distributed, torch_train

    params = load_params(args)
    section = config.section(params, "train_multiclass")
    ctx = torch_distributed.init_from_env()
    try:
        configs = torch_train.configs_from_params(params, args.only)
        manifest_dir = args.manifest_dir or section["manifest_dir"]
        manifest = data.load_manifest("multiclass", manifest_dir)
        summary = data.load_summary("multiclass", manifest_dir)
        if ctx.is_main:
            print(f"training {len(configs)} run(s) in {ctx.world_size} process(es), global batch "
                  f"{configs[0].batch_size}" if configs else "no run selected", flush=True)
        results = torch_train.train_all(configs, manifest, args.out or section["model_dir"],
                                        checkpoint_dir=args.checkpoint_dir or section["checkpoint_dir"],
                                        resume=bool(section["resume"]) and not args.fresh,
                                        data_source=summary["source"])
        if ctx.is_main:
            for name, result in results.items():
                print(f"{name}: best epoch {result.best_epoch}, validation loss {result.best_val_loss:.4f} -> "
                      f"{config.relative_to_project(result.best_path)} ({result.extra['train_seconds']} s)")
    finally:
        torch_distributed.shutdown()
    return 0


def cmd_train_run(args: argparse.Namespace) -> int:
    """One multi-class run end to end, the command of its DVC stage ``train_run@<run>``
    (:func:`xraylib.torch_runs.run`): train or reload, recalibrate, evaluate on the test split, write its card."""
    from xraylib import data, torch_runs, torch_train

    params = load_params(args)
    section = config.section(params, "train_multiclass")
    cfg, = torch_train.configs_from_params(params, [args.name])
    _exit_with_caller()  # killing dvc ends this stage (its loader workers follow their parent)
    manifest = data.load_manifest("multiclass", section["manifest_dir"])
    summary = data.load_summary("multiclass", section["manifest_dir"])
    outcome = torch_runs.run(cfg, manifest, section["model_dir"], torch_runs.Evaluation.from_params(params),
                             checkpoint_dir=section["checkpoint_dir"], resume=bool(section["resume"]) and not args.fresh,
                             data_source=summary["source"], synthetic=summary["synthetic"])
    test = outcome.entry["test"]
    print(f"{cfg.name}: best epoch {outcome.entry['best_epoch']}, test accuracy {test['accuracy']:.3f}, macro-F1 "
          f"{test['macro_f1']:.3f} -> {config.relative_to_project(torch_runs.metrics_path(cfg.name))}")
    return 0


def cmd_plots_page(args: argparse.Namespace) -> int:
    from xraylib import plots_page

    page = plots_page.write_page(config.user_path(args.out) if args.out else "reports/plots_page",
                                 targets=args.targets or None)
    print(f"wrote {config.relative_to_project(page)} (self-contained: open it from disk, no network needed)")
    return 0


def cmd_model_cards(args: argparse.Namespace) -> int:
    from xraylib import model_card

    for path in model_card.cards_from_metrics(models_dir=config.MODELS_DIR, next_to_weights=args.next_to_weights):
        print(f"wrote {config.relative_to_project(path)}")
    return 0


# The kernel does not capture file-descriptor output: TensorFlow's C++ start-up logs (time-stamped, unaffected
# by TF_CPP_MIN_LOG_LEVEL in TF 2.21) then stay in the terminal instead of making notebook outputs differ from run
# to run. Its own log shows errors only: the local kernel's "running over TCP without encryption" warning
# (the kernel and its client share one machine and one user) is not repeated for every notebook stage.
KERNEL_FLAGS = ("--IPKernelApp.capture_fd_output=False", "--IPKernelApp.log_level=ERROR")


def install_kernel(name: str = "xraylib", prefix: str | None = None) -> Path:
    """Register this environment's Python as the Jupyter kernel the notebooks use (:data:`KERNEL_FLAGS`)."""
    from ipykernel.kernelspec import install

    path = Path(install(kernel_name=name, display_name=f"Python ({name})", prefix=prefix or sys.prefix))
    spec_file = path / "kernel.json"
    spec = json.loads(spec_file.read_text())
    for flag in KERNEL_FLAGS:
        if flag not in spec["argv"]:
            spec["argv"].append(flag)
    spec.setdefault("env", {}).update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"})
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def cmd_install_kernel(args: argparse.Namespace) -> int:
    print(f"installed kernel spec {args.name} in {install_kernel(args.name, args.prefix)}")
    return 0


def profile_overrides(name: str) -> dict:
    """Flattened ``{dotted.key: value}`` overrides of a named profile in ``profiles/``."""
    import yaml

    profiles = config.PROFILES_DIR
    path = profiles / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in profiles.glob("*.yaml"))
        raise FileNotFoundError(f"profile {name!r} not found in {profiles}; available: {have}")
    from xraylib import schema

    return schema.flatten(yaml.safe_load(path.read_text()) or {})


def override_value(value) -> str:
    """A params value in the override grammar of ``dvc exp run -S`` (Hydra's): JSON, except that mapping keys
    are bare words (Hydra refuses quoted keys, so a list of ``{name, root}`` sets cannot be passed as JSON)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(override_value(item) for item in value) + "]"
    return json.dumps(value)


def cmd_exp(args: argparse.Namespace) -> int:
    overrides, source = _overrides(args)  # the profile (exp's argument), then any --set
    _validated(args, overrides, source)  # fails early, naming each key, on a stale profile or a refused value
    from xraylib import schema

    command = ["dvc", "exp", "run", *args.dvc_args]
    for key, value in overrides.items():
        if schema.is_named_mapping(key):  # -S key={...} would merge into the runs of params.yaml: replace them
            command += ["-S", f"~{key}", "-S", f"+{key}={override_value(value)}"]
        else:
            command += ["-S", f"{key}={override_value(value)}"]
    print(" ".join(command))
    if args.dry_run:
        return 0
    return subprocess.call(command, cwd=config.PROJECT_ROOT)


def cmd_regression(args: argparse.Namespace) -> int:
    from xraylib import regression

    root = config.project_root()
    scratch = config.user_path(args.dir) if args.dir else root / "build" / "regression"
    reference, tolerances = root / regression.REFERENCE_FILE, root / regression.TOLERANCES_FILE
    if args.update_reference and args.from_workspace:
        written = regression.write_reference(root, reference, "default")
        print(f"wrote {config.relative_to_project(written)} from the workspace's reports/metrics")
        return 0
    if not args.check_only:
        copied = regression.copy_project(root, scratch)
        print(f"[regression] copied {len(copied)} files of the working tree to {scratch}", flush=True)
        code = regression.run_study(scratch, args.numerics, notebooks=not args.no_notebooks)
        if code:
            print(f"xraylib regression: error: the study failed in {scratch} (exit {code}); see the output above",
                  file=sys.stderr)
            return code
    if args.update_reference:
        print(f"wrote {config.relative_to_project(regression.write_reference(scratch, reference, args.numerics))}")
        return 0
    problems = regression.check(scratch, reference, tolerances, training=not args.no_notebooks)
    for line in problems:
        print(f"regression: {line}", file=sys.stderr)
    n = 0
    if not args.no_notebooks:
        figures = regression.headline(scratch / "reports" / "metrics")
        n = len(figures)
        reference_figures = json.loads(reference.read_text())["headline"]
        limits = regression.load_tolerances(tolerances)  # read once, not once per figure
        for name, value in figures.items():
            if regression.tolerance_for(name, limits) is None:
                print(f"[regression] not compared (unstable across numeric paths): {name} = {value} "
                      f"(reference {reference_figures.get(name)})")
    print(f"[regression:{args.numerics}] {len(regression.EXACT_METRICS)} exact files and {n} training figures "
          f"compared with {regression.REFERENCE_FILE}: {len(problems)} problem(s)")
    return 1 if problems else 0


def download_command(dataset: str, out: Path) -> list[str]:
    """The Kaggle CLI call that downloads ``dataset`` into ``out``."""
    return ["kaggle", "datasets", "download", "-d", KAGGLE_DATASETS[dataset], "-p", str(out), "--unzip"]


def cmd_download(args: argparse.Namespace) -> int:
    """Download a Kaggle dataset with kagglehub (needs internet and Kaggle credentials)."""
    out = config.user_path(args.out) if args.out else config.RAW_DIR / args.dataset
    try:
        import kagglehub
    except ImportError as err:  # pragma: no cover - kagglehub is a pinned dependency
        raise SystemExit(f"kagglehub is not installed ({err}); run `make env` or pip install kagglehub") from err
    try:
        path = kagglehub.dataset_download(KAGGLE_DATASETS[args.dataset], output_dir=str(out))
    except Exception as err:  # network, credentials, HTTP errors: all mean the same to the user
        raise SystemExit(
            f"could not download Kaggle dataset {KAGGLE_DATASETS[args.dataset]!r}: {type(err).__name__}: {err}\n"
            "This needs internet access and Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/"
            "KAGGLE_KEY). Alternatively download it in a browser from "
            f"https://www.kaggle.com/datasets/{KAGGLE_DATASETS[args.dataset]}, unzip it and set "
            f"data.<task>.root in params.yaml to the folder (source: {args.dataset})."
        ) from err
    print(f"downloaded to {path}; set data.<task>.source: {args.dataset} and data.<task>.root: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from xraylib import inference

    model = inference.load_classifier(config.user_path(args.model))
    result = inference.evaluate_folder(model, config.user_path(args.data), config.user_path(args.out),
                                       batch_size=args.batch_size, site_calibration=args.site_calibration)
    print(json.dumps(result["summary"], indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from xraylib import inference

    model = inference.load_classifier(config.user_path(args.model))
    result = inference.predict_files(model, [config.user_path(p) for p in args.inputs], config.user_path(args.output),
                                     cam_dir=config.user_path(args.cam) if args.cam else None)
    print(f"predicted {result['predicted']} image(s) -> {args.output}; skipped {len(result['skipped'])}")
    for path, reason in result["skipped"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0 if result["predicted"] else 1


def cmd_cams(args: argparse.Namespace) -> int:
    """Internal: Grad-CAM maps of a Keras model on a CSV of images, to an ``.npz`` file, in this (TensorFlow) process.

    Notebook 05 runs it in a subprocess (:func:`xraylib.gradcam_sets.run_keras_cams`), since
    TensorFlow and torch cannot share one process; the maps (and their deletion curves) come from
    :func:`xraylib.tf_gradcam.write_camset`.
    """
    from xraylib import tf_gradcam

    camset = tf_gradcam.write_camset(config.user_path(args.model), config.user_path(args.images),
                                     config.user_path(args.out), name=args.name, batch_size=args.batch_size,
                                     deletion_steps=args.deletion_steps, deletion_baseline=args.deletion_baseline,
                                     seed=args.seed)
    print(f"{len(camset)} Grad-CAM maps ({camset.info['target_layer']}) -> {args.out}")
    return 0


def _project_label() -> str:
    """The project this command would work in, for ``--version`` (or that none was found)."""
    try:
        return str(config.project_root())
    except Exception:  # noqa: BLE001 - --version must answer even outside a project
        return "none found from the working directory"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xraylib", description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="parameter file (default: params.yaml of the project found from the "
                        "working directory, or $XRAYLIB_PROJECT)")
    parser.add_argument("--profile", metavar="NAME", help="apply the overrides of profiles/NAME.yaml (a run outside "
                        "DVC; `xraylib exp NAME` runs a profile as a DVC experiment)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one parameter, e.g. --set train_binary.epochs=5 (repeatable; as dvc exp -S)")
    parser.add_argument("--version", action="version", version=f"xraylib {__version__} (project: {_project_label()})")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (also: {errors.DEBUG_ENV}=1, e.g. under dvc repro)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synthesize", help="generate the synthetic demo data (binary and 4-class)")
    p.add_argument("--out", help="output folder (default data/raw/synthetic)")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("prepare", help="manifest, quarantine, patient-level splits and leakage check")
    p.add_argument("task", choices=config.TASKS)
    p.add_argument("--out", help="output folder (default data/processed/<task>)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("notebook", help="execute a numbered notebook with papermill and params.yaml")
    p.add_argument("stage", choices=list(NOTEBOOKS))
    p.add_argument("--kernel", default="xraylib", help="Jupyter kernel name (default: xraylib)")
    p.add_argument("--quiet", action="store_true", help="do not stream cell output to the terminal")
    p.add_argument("--out", metavar="DIR", help="a run outside the pipeline: the executed notebook, figures, metrics "
                   "and plots go to DIR instead of reports/, and the stage's model and checkpoint folders to DIR/")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("train-multiclass", help="train the multi-class runs (one process, or one per device under "
                       "torchrun: torchrun --nproc_per_node N -m xraylib train-multiclass)")
    # --only, not --run: torchrun would take --run as an abbreviation of its own --run-path
    p.add_argument("--only", action="append", metavar="NAME", help="train only this run (repeatable; default: all)")
    p.add_argument("--manifest-dir", help="prepared data (default: train_multiclass.manifest_dir)")
    p.add_argument("--out", help="model folder (default: train_multiclass.model_dir)")
    p.add_argument("--checkpoint-dir", help="checkpoint folder (default: train_multiclass.checkpoint_dir)")
    p.add_argument("--fresh", action="store_true", help="do not resume from checkpoints")
    p.set_defaults(func=cmd_train_multiclass)

    p = sub.add_parser("train-run", help="one multi-class run end to end (its DVC stage train_run@NAME): train or "
                       "reload, recalibrate, evaluate on the test split, write its metrics and model card")
    p.add_argument("name", help="a run of train_multiclass.runs")
    p.add_argument("--fresh", action="store_true", help="do not resume from checkpoints")
    p.set_defaults(func=cmd_train_run)

    p = sub.add_parser("summary", help="write reports/metrics/summary.json, the headline numbers DVC shows")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("plots-page", help="the plots of dvc.yaml as one HTML page that works offline")
    p.add_argument("targets", nargs="*", help="plot ids or files (default: every plot dvc.yaml declares)")
    p.add_argument("--out", help="output folder (default reports/plots_page)")
    p.set_defaults(func=cmd_plots_page)

    p = sub.add_parser("model-cards", help="write reports/model_cards/*.md (Mitchell et al. 2019 sections, Hugging Face "
                       "model-card metadata) from the metrics of the trained models; offline")
    p.add_argument("--next-to-weights", action="store_true", help="also write each card, Grad-CAM included, as "
                   "README.md into its existing model folder (models/binary, models/multiclass/<run>), replacing the "
                   "card the training stage wrote there. Not in the DVC stage: those folders are outputs of the "
                   "training stages, and a changed file in them makes DVC see them as changed")
    p.set_defaults(func=cmd_model_cards)

    p = sub.add_parser("install-kernel", help="register this environment as the notebooks' Jupyter kernel")
    p.add_argument("--name", default="xraylib")
    p.add_argument("--prefix", help="install prefix (default: this environment, sys.prefix)")
    p.set_defaults(func=cmd_install_kernel)

    p = sub.add_parser("sync-outputs", help="copy executed outputs from reports/notebooks into notebooks/ (for nbval)")
    p.add_argument("stages", nargs="*", metavar="STAGE", help=f"notebook stages {list(NOTEBOOKS)} (default: all)")
    p.add_argument("--no-dvc-commit", action="store_true",
                   help="do not record the updated notebooks in dvc.lock (`dvc commit --force STAGE...`)")
    p.set_defaults(func=cmd_sync_outputs)

    p = sub.add_parser("exp", help="run `dvc exp run` with a named profile from profiles/")
    p.add_argument("profile", help="profile name, e.g. kermany_cpu, kermany3_cpu, paper_gpu")
    p.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    p.set_defaults(dvc_args=[])  # everything after `--` goes to dvc exp run (see main)
    p.set_defaults(func=cmd_exp)

    p = sub.add_parser("regression", help="re-run the study in a scratch copy and compare it with the reference")
    p.add_argument("--dir", help="scratch folder (default build/regression in the project)")
    p.add_argument("--numerics", choices=["default", "alt", "threads"], default="alt",
                   help="numeric path: alt = oneDNN off and other thread counts than the reference (default); "
                        "threads = other thread counts only; default = the reference's own path")
    p.add_argument("--no-notebooks", action="store_true", help="data stages only (no nbval, no training)")
    p.add_argument("--check-only", action="store_true", help="compare an existing scratch run, run nothing")
    p.add_argument("--update-reference", action="store_true",
                   help="record the run as tests/regression/reference.json (after an intended change)")
    p.add_argument("--from-workspace", action="store_true",
                   help="with --update-reference: record the workspace's reports/metrics (from `dvc repro` on the "
                        "default numeric path) instead of running the study again")
    p.set_defaults(func=cmd_regression)

    p = sub.add_parser("download", help="download a Kaggle dataset (needs internet and Kaggle credentials)")
    p.add_argument("dataset", choices=list(KAGGLE_DATASETS))
    p.add_argument("--out", help="output folder (default data/raw/<dataset>)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a class-per-folder image set")
    p.add_argument("model", help="saved model: .keras (binary Keras) or .pt (PyTorch checkpoint)")
    p.add_argument("data", help="folder with one subfolder per class (same class names as training)")
    p.add_argument("--out", default="external_evaluation",
                   help="output folder for metrics JSON and figures, relative to the working directory "
                        "(default external_evaluation)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--site-calibration", choices=("none", "platt", "temperature"), default="none",
                   help="binary models: ALSO report a labelled site-calibrated result, threshold and this map fitted "
                        "on the folder's own patients by 2-fold cross-fitting (default none: the model as shipped)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict class probabilities for images, a list or folders")
    p.add_argument("model", help="saved model: .keras (binary Keras) or .pt (PyTorch checkpoint)")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--output", default="predictions.csv", help="CSV file to write (default predictions.csv)")
    p.add_argument("--cam", metavar="DIR", help="also write Grad-CAM overlays to DIR")
    p.set_defaults(func=cmd_predict)

    # Internal (notebook 05's Keras Grad-CAM subprocess): a parser without help= is not listed by --help.
    p = sub.add_parser("cams",
                       description="Internal: Grad-CAM maps of a Keras model on a CSV of images, written to an .npz "
                                   "file (run by notebook 05 in a TensorFlow subprocess).")
    p.add_argument("model", help="saved model (.keras, with its .json sidecar)")
    p.add_argument("--images", required=True, help="CSV with a 'path' column and optionally 'label'")
    p.add_argument("--out", required=True, help=".npz file to write")
    p.add_argument("--name", default="binary", help="name of the model in reports (default: binary)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward/backward pass (default: 16)")
    p.add_argument("--deletion-steps", type=int, default=0, help="steps of the deletion curves (default: 0, none)")
    p.add_argument("--deletion-baseline", default="blur", help="what deleted pixels become: blur or mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the curves' random pixel order (default: 0)")
    p.set_defaults(func=cmd_cams)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(extra) - 1] if "--" in argv else argv)
    if extra:
        if args.command != "exp":
            parser.error(f"arguments after -- are only for `xraylib exp` (passed to dvc exp run), got {extra}")
        args.dvc_args = extra
    return errors.run_command(lambda: args.func(args), f"xraylib {args.command}", debug=args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
