"""Training throughput of the PyTorch path, each comparison measured side by side in one run (issue "Scale out").

Four parts; each runs every variant in a fresh Python process (thread pools, ``torch.use_deterministic_algorithms``
and compiled graphs of one variant cannot leak into the next), appends one CSV row per comparison under ``--out``
(default ``reports/benchmarks/throughput_torch_<part>.csv``, with the ``cpu`` model and thread counts) and prints
the ratios:

``loop``      the project's loop (:func:`xraylib.torch_train.train`: ``ManifestDataset`` + ``make_loader`` +
              ``train_one_epoch``, params.yaml's settings) against a plain loop as the original study wrote it
              (``torchvision.datasets.ImageFolder`` + Resize / RandomHorizontalFlip / ToTensor / Normalize, a
              ``DataLoader`` with 2 workers, the textbook step). Same model (ResNet18 from scratch), image size
              (64), batch (20) and augmentation (horizontal flip); at 1 and 2 torch threads, and as each runs by
              default (the project: ``train_multiclass.num_threads``; the plain loop: torch's default). Target >= 1.0x.
``pipeline``  the project's loader (``ManifestDataset`` + ``make_loader``, params.yaml's workers and sampler), with
              the decoded images kept in memory as ``train_multiclass.image_cache_mb`` allows (``loader``) and
              reading the files every epoch (``loader_files``), against pre-decoded in-memory tensors (``uint8``
              converted, flipped and normalised per batch; or ``float32`` already normalised, flipped per batch),
              through the same ``train_one_epoch`` step. Target >= 0.9x. ``decode_s``: the one-time decoding.
``settings``  training steps on a fixed random batch (as ``benchmarks/torch_cpu_recipe.py speed``): threads 1 / 2,
              channels-last, bfloat16 autocast, ``torch.compile`` (compile time timed apart; a failure is
              recorded as ``failed: <one line>``).
``gloo``      1 process against 2 gloo processes (``torch.distributed`` + DDP through ``torch_train.train``, a file
              store, 1 thread each, global batch 20; a 1-process 2-thread row for reference). On 2 cores little is to
              be gained: what it shows is the overhead, and that the ranks agree on every reduced figure (the
              1- and 2-process losses differ a little: CPU BatchNorm normalises each process's half batch).

Repeats: ``loop`` and ``pipeline`` measure every variant ``--repeats`` times (default 3), interleaved (each repeat
runs all variants, every other repeat in reverse order), write one row per repeat with the ratios within that repeat,
and print the median and range of each figure over the repeats. On this 2-core VM the same measurement moves by up
to 2x between runs; a single ratio says little.

Timing: ``images_per_s`` counts the training steps after the first ``--warmup`` batches of the epoch (loader start-up,
first allocations and oneDNN kernel choice excluded), images of those batches over the time from the end of batch
``warmup`` (1-based) to the end of the last batch. ``call_s`` is the whole call for the record (for the project: also its
validation, BatchNorm re-estimation and checkpoints; for the plain loop: the epoch with loader start-up).

Data: a seeded image-level subset of a class-per-folder root, by default the real four-class set
``../shared/data/covid4_224`` (relative paths are taken from the repository root): ``--images`` training images
(default 3,035, the size of the project's covid4 training split) and ``--val-images`` validation images (607), drawn
from the 4,249 files; the plain loop reads the same training files (``ImageFolder(is_valid_file=...)``).

Real measurements (run from the repository root on a quiet machine; times on 2 cores)::

    python benchmarks/throughput_torch.py loop        # about 15 min (3 repeats)
    python benchmarks/throughput_torch.py pipeline    # about 20 min (3 repeats)
    python benchmarks/throughput_torch.py settings    # about 9 min (4 torch.compile runs, ~1.5 min compiling each)
    python benchmarks/throughput_torch.py gloo        # about 4 min

Smoke test (seconds)::

    python benchmarks/throughput_torch.py loop --images 64 --val-images 16 --warmup 1 --repeats 2 --out /tmp/tp_loop.csv
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import throughput_common
from throughput_common import figure, finish, ratio, run_child, subset_manifest
from xraylib import config, numerics

SETTINGS = {  # name -> (channels-last, bfloat16 autocast, torch.compile)
    "fp32": (False, False, False),
    "channels_last": (True, False, False),
    "bf16": (False, True, False),
    "bf16_channels_last": (True, True, False),
    "compile": (False, False, True),
    "compile_channels_last": (True, False, True),
}
PIPELINE_VARIANTS = ("memory_float", "memory_uint8", "loader", "loader_files")
LOADERS = ("loader", "loader_files")  # the project's loader with the decoded images kept (params.yaml) or read anew
GLOO_VARIANTS = {"1proc_1thread": (1, 1), "1proc_2threads": (1, 2), "2procs_1thread": (2, 1)}  # (processes, threads)


# ----------------------------------------------------------------------------------------------- shared helpers




def batch_sizes(n_images: int, batch_size: int, world_size: int = 1) -> list[int]:
    """Images per (global) step of one epoch; a last part smaller than ``world_size`` is dropped, as DDP does."""
    full, rest = divmod(n_images, batch_size)
    return [batch_size] * full + ([rest] if rest >= max(world_size, 1) else [])


def steady_rate(stamps: list[float], sizes: list[int], warmup: int) -> float:
    """Images per second after the first ``warmup`` steps.

    Args:
        stamps: time at the end of each step (``time.perf_counter``).
        sizes: images of each step.
        warmup: steps left out (>= 1: the first stamp is the start of the timed span).

    Raises:
        ValueError: too few steps for ``warmup``.
    """
    if warmup < 1 or len(stamps) < warmup + 1 or len(stamps) != len(sizes):
        raise ValueError(f"{len(stamps)} steps ({len(sizes)} expected) cannot leave out --warmup {warmup} (>= 1) "
                         "and time the rest; use more images or a smaller --warmup")
    return sum(sizes[warmup:]) / (stamps[-1] - stamps[warmup - 1])






def measure(spec: dict, timeout: float) -> dict:
    """One measurement (``spec["kind"]``) in a fresh interpreter (:func:`throughput_common.run_child`)."""
    label = json.dumps({k: v for k, v in spec.items() if k in ("kind", "variant", "threads")})
    return run_child(__file__, spec, timeout, label)


def common_columns(part: str) -> dict:
    """Columns of every row: benchmark part, date, CPU model, cores, torch version."""
    import torch

    return {"benchmark": f"throughput_torch {part}", "date": datetime.date.today().isoformat(),
            "cpu": numerics.cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__}








def data_spec(args) -> dict:
    return {"root": args.root, "images": args.images, "val_images": args.val_images, "seed": args.seed,
            "image_size": args.image_size, "batch_size": args.batch_size, "warmup": args.warmup, "arch": args.arch}


# ------------------------------------------------------------------------------------- measurements (children)


def _project_config(spec: dict, threads: int | None):
    """The study's RunConfig (params.yaml) for one epoch on the CPU at the benchmark's size, batch and threads."""
    from xraylib import torch_train

    overrides = {"epochs": 1, "image_size": spec["image_size"], "batch_size": spec["batch_size"],
                 "weights": "none", "device": "cpu", "augment": "flip", "progressive_resizing": []}
    if threads is not None:
        overrides["num_threads"] = threads
    for key in ("num_workers", "image_cache_mb"):
        if spec.get(key) is not None:
            overrides[key] = spec[key]
    settings = {**torch_train.shared_settings(config.load_params()), **overrides}
    return torch_train.build_configs({"throughput": {"arch": spec["arch"], "step_lr": False}}, **settings)[0]


def _train_project(spec: dict, out_dir: str, world_size: int = 1) -> dict:
    """One epoch of :func:`xraylib.torch_train.train`; step timestamps from its ``on_batch_end`` hook."""
    import torch

    from xraylib import torch_train

    manifest = subset_manifest(spec["root"], spec["images"], spec["val_images"], spec["seed"])
    cfg = _project_config(spec, spec.get("threads"))
    stamps: list[float] = []
    start = time.perf_counter()
    result = torch_train.train(cfg, manifest, out_dir, resume=False, verbose=False,
                               on_batch_end=lambda epoch, index: stamps.append(time.perf_counter()))
    sizes = batch_sizes(spec["images"], cfg.batch_size, world_size)
    return {"images_per_s": steady_rate(stamps, sizes, spec["warmup"]), "call_s": time.perf_counter() - start,
            "threads": torch.get_num_threads(), "workers": cfg.num_workers, "image_cache_mb": cfg.image_cache_mb,
            "history": result.history.drop(columns="lr").round(6).to_dict("list")}


def measure_project(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="throughput_torch_") as tmp:
        return _train_project(spec, tmp)


def measure_plain(spec: dict) -> dict:
    """The original study's loop: ImageFolder, torchvision transforms, DataLoader(2 workers), the textbook step."""
    import torch
    import torchvision
    from torch import nn
    from torchvision import datasets, transforms

    from xraylib.torch_data import IMAGENET_MEAN, IMAGENET_STD

    if spec.get("threads") is not None:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    manifest = subset_manifest(spec["root"], spec["images"], spec["val_images"], spec["seed"])
    chosen = set(manifest.loc[manifest["split"] == "train", "path"])
    size = spec["image_size"]
    transform = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train_set = datasets.ImageFolder(str(config.resolve(spec["root"])), transform=transform,
                                     is_valid_file=lambda path: path in chosen)
    loader = torch.utils.data.DataLoader(train_set, batch_size=spec["batch_size"], shuffle=True, num_workers=2)
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, len(train_set.classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=_project_config(spec, None).learning_rate)
    model.train()
    stamps, sizes, running_loss, correct = [], [], 0.0, 0
    start = time.perf_counter()
    for images, labels in loader:
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * images.size(0)
        correct += (outputs.argmax(1) == labels).sum().item()
        stamps.append(time.perf_counter())
        sizes.append(images.size(0))
    return {"images_per_s": steady_rate(stamps, sizes, spec["warmup"]), "call_s": time.perf_counter() - start,
            "threads": torch.get_num_threads(), "loss": running_loss / sum(sizes)}


class TensorBatches:
    """Shuffled, flipped, normalised batches from pre-decoded images held in memory (the ideal input pipeline).

    Args:
        gray: ``uint8`` images ``(N, S, S)``.
        targets: class indices ``(N,)``.
        batch_size: images per batch.
        generator: seeded generator (order and flips).
        as_float: keep the images as normalised ``float32 (N, 3, S, S)`` (only the flip is left per batch);
            else keep ``uint8`` and convert, expand to 3 channels and normalise every batch.
    """

    def __init__(self, gray, targets, batch_size: int, generator, *, as_float: bool):
        import torch

        from xraylib.torch_data import IMAGENET_MEAN, IMAGENET_STD

        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.as_float, self.batch_size, self.generator, self.targets = as_float, batch_size, generator, targets
        x = gray.unsqueeze(1)
        self.x = self._normalise(x) if as_float else x

    def _normalise(self, x):
        return (x.float().div(255.0).expand(-1, 3, -1, -1) - self.mean) / self.std

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self):
        import torch

        order = torch.randperm(len(self.targets), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            x = self.x[index]
            flip = (torch.rand(len(index), generator=self.generator) < 0.5).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
            yield (x if self.as_float else self._normalise(x)), self.targets[index]


def measure_pipeline(spec: dict) -> dict:
    """One epoch of ``train_one_epoch`` fed by the project's loader or by :class:`TensorBatches`."""
    import torch
    from torch import nn

    from xraylib import torch_train
    from xraylib.torch_data import ManifestDataset, keep_decoded, make_generator, make_loader
    from xraylib.torch_model import build_model

    cfg = _project_config(spec, spec["threads"])
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device("cpu")
    torch_train.set_determinism(cfg.seed, device)
    manifest = subset_manifest(spec["root"], spec["images"], spec["val_images"], spec["seed"])
    names = sorted(manifest["label"].unique())
    dataset = ManifestDataset(manifest, "train", cfg.image_size, cfg.resize, cfg.equalize, class_names=names,
                              augment=cfg.augment)
    if spec["variant"] in LOADERS:
        cache_mb = cfg.image_cache_mb if spec["variant"] == "loader" else 0
        start = time.perf_counter()
        kept = keep_decoded([dataset], cache_mb, cfg.num_workers)
        decode_s = time.perf_counter() - start if kept else None
        batches = make_loader(dataset, cfg.batch_size, shuffle=True, weighted=cfg.weighted_sampler,
                              num_workers=cfg.num_workers, generator=make_generator(cfg.seed))
    else:
        start = time.perf_counter()
        gray = torch.from_numpy(np.stack([dataset.load(i) for i in range(len(dataset))]))
        decode_s = time.perf_counter() - start
        batches = TensorBatches(gray, torch.tensor(dataset.targets), cfg.batch_size, make_generator(cfg.seed),
                                as_float=spec["variant"] == "memory_float")
    model = build_model(cfg.arch, len(names), "none")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stamps: list[float] = []
    start = time.perf_counter()
    loss, _ = torch_train.train_one_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, scaler, device,
                                          on_batch_end=lambda epoch, index: stamps.append(time.perf_counter()))
    sizes = batch_sizes(len(dataset), cfg.batch_size)
    where = {"workers": cfg.num_workers, "image_cache_mb": cache_mb} if spec["variant"] in LOADERS else {}
    return {"images_per_s": steady_rate(stamps, sizes, spec["warmup"]), "call_s": time.perf_counter() - start,
            "threads": torch.get_num_threads(), "loss": loss, "decode_s": decode_s, **where}


def measure_setting(spec: dict) -> dict:
    """Median training-step time on a fixed random batch under one CPU setting (:data:`SETTINGS`)."""
    import torch
    from torch import nn

    from xraylib.torch_model import build_model
    from xraylib.torch_train import Numerics, set_determinism

    channels_last, bf16, compiled = SETTINGS[spec["variant"]]
    torch.set_num_threads(spec["threads"])
    device = torch.device("cpu")
    if spec["deterministic"]:
        set_determinism(spec["seed"], device)
    torch.manual_seed(spec["seed"])
    numerics_ = Numerics(bf16, torch.bfloat16, channels_last)
    model = build_model(spec["arch"], 4, "none").train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    size, batch = spec["image_size"], spec["batch_size"]
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 4, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    stepped = torch.compile(model) if compiled else model

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with numerics_.context(device):
            loss = criterion(stepped(numerics_.input(x, device)).float(), y)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    try:
        first_s = step()
    except Exception as err:  # torch.compile can fail on a CPU (compiler, headers, unsupported ops)
        text = str(err).strip().splitlines() or [type(err).__name__]
        return {"status": f"failed: {type(err).__name__}: {text[0][:200]}", "threads": torch.get_num_threads()}
    for _ in range(spec["warmup"] - 1):
        step()
    times = [step() for _ in range(spec["steps"])]
    return {"images_per_s": batch / statistics.median(times), "first_step_s": first_s,
            "threads": torch.get_num_threads()}


def _gloo_rank(rank: int, world_size: int, store: str, spec: dict, out_dir: str) -> None:
    """One process of a gloo group: :func:`_train_project` through DDP; rank results to ``rank<k>.json``.

    The rank is a spawned process, whose ``multiprocessing`` would then also spawn the DataLoader's workers (each
    re-importing torch and this script: about 10 s per loader start on 2 cores); the platform's default start method
    is restored first, so the workers fork as under ``torchrun``, where every rank is a fresh interpreter.
    """
    import multiprocessing

    import torch.distributed as dist

    multiprocessing.set_start_method(None, force=True)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        result = _train_project(spec, out_dir, world_size)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def measure_gloo(spec: dict) -> dict:
    """One epoch in ``processes`` gloo processes (or one plain process) at ``threads`` torch threads each."""
    import torch.multiprocessing as mp

    processes = spec["processes"]
    if processes == 1:
        return measure_project(spec)
    with tempfile.TemporaryDirectory(prefix="throughput_gloo_") as tmp:
        out_dir = Path(tmp, "run")
        out_dir.mkdir()
        mp.start_processes(_gloo_rank, args=(processes, str(Path(tmp, "store")), spec, str(out_dir)),
                           nprocs=processes, join=True, start_method="spawn")
        ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(processes)]
    agree = all(r["history"] == ranks[0]["history"] for r in ranks)
    return {**ranks[0], "ranks_agree": agree}


MEASURES = {"project": measure_project, "plain": measure_plain, "pipeline": measure_pipeline,
            "setting": measure_setting, "gloo": measure_gloo}


# ------------------------------------------------------------------------------------------ parts (the parent)


def part_loop(args) -> None:
    """Project loop vs plain loop at equal threads and as each runs by default, ``--repeats`` times interleaved."""
    import torch

    defaults = {"project": _project_config(data_spec(args), None).num_threads or torch.get_num_threads(),
                "plain": torch.get_num_threads()}  # a fresh process: torch's default
    specs = {(kind, threads): {**data_spec(args), "kind": kind, "threads": threads,
                               "image_cache_mb": args.image_cache_mb if kind == "project" else None}
             for threads in sorted({*args.threads, *defaults.values()}) for kind in ("plain", "project")}
    comparisons = [(f"{t} thread(s) each", t, t) for t in args.threads]
    comparisons.append(("as each runs by default", defaults["project"], defaults["plain"]))
    rows = []
    for k, results in enumerate(throughput_common.interleaved(specs, args.repeats,
                                                              lambda spec: measure(spec, args.timeout)), 1):
        for name, t_project, t_plain in comparisons:
            project, plain = results["project", t_project], results["plain", t_plain]
            rows.append({**common_columns("loop"), "repeat": k, "comparison": name, "project_threads": t_project,
                         "plain_threads": t_plain, "images": args.images, "image_size": args.image_size,
                         "batch_size": args.batch_size, "warmup_batches": args.warmup,
                         "image_cache_mb": project.get("image_cache_mb", ""),
                         "project_images_per_s": figure(project), "plain_images_per_s": figure(plain),
                         "ratio": ratio(project.get("images_per_s"), plain.get("images_per_s")), "target": ">= 1.0",
                         "project_call_s": figure(project, "call_s"), "plain_call_s": figure(plain, "call_s")})
    finish(rows, args.out, ["repeat", "comparison", "project_threads", "plain_threads", "project_images_per_s",
                            "plain_images_per_s", "ratio"],
           by=["comparison"], summarised=["project_images_per_s", "plain_images_per_s", "ratio"])


def part_pipeline(args) -> None:
    """The project's loader vs in-memory tensors through the same training step, ``--repeats`` times interleaved."""
    specs = {(threads, v): {**data_spec(args), "kind": "pipeline", "variant": v, "threads": threads,
                            "num_workers": args.num_workers}
             for threads in args.threads for v in PIPELINE_VARIANTS}
    rows = []
    for k, results in enumerate(throughput_common.interleaved(specs, args.repeats,
                                                              lambda spec: measure(spec, args.timeout)), 1):
        for (threads, variant), result in sorted(results.items(), key=lambda item: list(specs).index(item[0])):
            rows.append({**common_columns("pipeline"), "repeat": k, "variant": variant, "threads": threads,
                         "workers": result.get("workers", ""), "image_cache_mb": result.get("image_cache_mb", ""),
                         "images": args.images, "image_size": args.image_size,
                         "batch_size": args.batch_size, "warmup_batches": args.warmup,
                         "images_per_s": figure(result),
                         "ratio_to_memory_float": ratio(result.get("images_per_s"),
                                                        results[threads, "memory_float"].get("images_per_s")),
                         "ratio_to_memory_uint8": ratio(result.get("images_per_s"),
                                                        results[threads, "memory_uint8"].get("images_per_s")),
                         "target": ">= 0.9 (loader)",
                         "decode_s": round(result["decode_s"], 2) if result.get("decode_s") is not None else "",
                         "call_s": figure(result, "call_s")})
    finish(rows, args.out, ["repeat", "variant", "threads", "workers", "images_per_s", "ratio_to_memory_float",
                            "ratio_to_memory_uint8", "decode_s"],
           by=["threads", "variant"], summarised=["images_per_s", "ratio_to_memory_float", "ratio_to_memory_uint8"])


def part_settings(args) -> None:
    """Threads, channels-last, bfloat16 autocast and torch.compile, each against fp32 eager."""
    results = {(t, s): measure({"kind": "setting", "variant": s, "threads": t, "arch": args.arch,
                                  "image_size": args.image_size, "batch_size": args.batch_size, "seed": args.seed,
                                  "warmup": args.warmup, "steps": args.steps,
                                  "deterministic": args.deterministic}, args.timeout)
               for t in args.threads for s in args.settings}
    rows = []
    for (threads, setting), result in results.items():
        base = results.get((threads, "fp32"), {})
        one = results.get((min(args.threads), setting), {})
        rows.append({**common_columns("settings"), "arch": args.arch, "image_size": args.image_size,
                     "batch_size": args.batch_size, "threads": threads, "setting": setting,
                     "deterministic": args.deterministic, "images_per_s": figure(result),
                     "ratio_to_fp32": ratio(result.get("images_per_s"), base.get("images_per_s")),
                     f"ratio_to_{min(args.threads)}_thread": ratio(result.get("images_per_s"),
                                                                   one.get("images_per_s")),
                     "first_step_s": figure(result, "first_step_s"), "steps": args.steps})
    finish(rows, args.out, ["threads", "setting", "images_per_s", "ratio_to_fp32",
                            f"ratio_to_{min(args.threads)}_thread", "first_step_s"])


def part_gloo(args) -> None:
    """1 process vs 2 gloo processes (DDP through torch_train.train)."""
    results = {name: measure({**data_spec(args), "kind": "gloo", "variant": name, "processes": procs,
                                "threads": threads, "num_workers": args.num_workers}, args.timeout)
               for name, (procs, threads) in GLOO_VARIANTS.items()}
    base = results["1proc_1thread"].get("images_per_s")
    rows = []
    for name, (procs, threads) in GLOO_VARIANTS.items():
        result = results[name]
        history = result.get("history", {})
        rows.append({**common_columns("gloo"), "variant": name, "processes": procs, "threads": threads,
                     "workers": result.get("workers", ""), "images": args.images, "image_size": args.image_size,
                     "global_batch": args.batch_size, "warmup_batches": args.warmup, "images_per_s": figure(result),
                     "ratio_to_1proc_1thread": ratio(result.get("images_per_s"), base),
                     "ranks_agree": result.get("ranks_agree", "n/a" if procs == 1 else "failed"),
                     "train_loss": history.get("loss", [""])[0], "val_loss": history.get("val_loss", [""])[0],
                     "call_s": figure(result, "call_s")})
    finish(rows, args.out, ["variant", "images_per_s", "ratio_to_1proc_1thread", "ranks_agree", "train_loss",
                            "val_loss", "call_s"])


# ------------------------------------------------------------------------------------------------ command line


def _data_arguments(parser: argparse.ArgumentParser, part: str, threads: list[int] | None) -> None:
    parser.add_argument("--root", default="../shared/data/covid4_224",
                        help="class-per-folder image root (relative: from the repository root)")
    parser.add_argument("--images", type=int, default=3035, help="training images (default: covid4's train split)")
    parser.add_argument("--val-images", type=int, default=607, help="validation images (the project's loop only)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--warmup", type=int, default=5, help="batches left out of images/s at the epoch's start")
    if threads is not None:
        parser.add_argument("--threads", type=int, nargs="+", default=threads)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--out", default=f"reports/benchmarks/throughput_torch_{part}.csv")
    if part in ("loop", "pipeline"):
        parser.add_argument("--repeats", type=int, default=3,
                            help="measurements per variant, interleaved (median and range printed)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    loop = sub.add_parser("loop", help="project loop vs the original's plain loop")
    _data_arguments(loop, "loop", [1, 2])
    loop.add_argument("--image-cache-mb", type=int, default=None,
                      help="the project's train_multiclass.image_cache_mb (default: params.yaml; "
                           "0 = decode every epoch)")
    pipeline = sub.add_parser("pipeline", help="project loader vs in-memory tensors")
    _data_arguments(pipeline, "pipeline", [1, 2])
    pipeline.add_argument("--num-workers", type=int, default=None, help="loader workers (default: params.yaml)")
    settings = sub.add_parser("settings", help="threads, channels-last, bfloat16, torch.compile")
    settings.add_argument("--arch", default="resnet18")
    settings.add_argument("--image-size", type=int, default=64)
    settings.add_argument("--batch-size", type=int, default=20)
    settings.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    settings.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    settings.add_argument("--warmup", type=int, default=3, help="untimed steps (the first includes compiling)")
    settings.add_argument("--steps", type=int, default=20, help="timed steps (median kept)")
    settings.add_argument("--deterministic", type=int, choices=(0, 1), default=1,
                          help="torch.use_deterministic_algorithms as torch_train.train sets it")
    settings.add_argument("--seed", type=int, default=42)
    settings.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    settings.add_argument("--out", default="reports/benchmarks/throughput_torch_settings.csv")
    gloo = sub.add_parser("gloo", help="1 vs 2 gloo processes (DDP)")
    _data_arguments(gloo, "gloo", None)  # the variants fix the threads: GLOO_VARIANTS
    gloo.add_argument("--num-workers", type=int, default=None, help="loader workers per process (default: params)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parts = {"loop": part_loop, "pipeline": part_pipeline, "settings": part_settings, "gloo": part_gloo}
    return throughput_common.main(argv, build_parser(), MEASURES, parts)


if __name__ == "__main__":
    raise SystemExit(main())
