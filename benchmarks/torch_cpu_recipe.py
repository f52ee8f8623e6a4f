"""CPU training of the four-class PyTorch study: what pays on a small CPU (issue 13).

Two parts, each appending rows to a CSV under ``reports/benchmarks/``:

``speed``  training throughput (images/s of forward + backward + Adam step on a
           fixed random batch) per architecture, image size and numeric setting:
           float32 or bfloat16 autocast, contiguous (NCHW) or channels-last (NHWC)
           tensors, torch intra-op threads. No data, no accuracy: what each setting
           costs. ``--repeats`` timed steps after one warm-up step; the best step
           is kept (the others are slowed by whatever else runs on the machine).
``recipe`` short real trainings (``xraylib.torch_train.train``) of one run on a
           prepared manifest under recipe variants (learning-rate schedule, label
           smoothing, progressive resizing, ...): wall time and the VALIDATION
           accuracy / macro-F1 of ``best.pt`` (the test split is never read here).

Usage::

    python benchmarks/torch_cpu_recipe.py speed --archs resnet18 efficientnet_lite0 --sizes 96 160 \
        --out reports/benchmarks/torch_cpu_speed.csv
    python benchmarks/torch_cpu_recipe.py recipe --manifest /tmp/runs/c4/manifest --arch resnet18 \
        --image-size 64 --epochs 4 --variant constant:lr_schedule=constant --variant onecycle:lr_schedule=onecycle \
        --out reports/benchmarks/torch_cpu_recipe.csv
"""

from __future__ import annotations

import argparse
import ast
import csv
import platform
import time
from pathlib import Path

from xraylib import config, data

SPEED_SETTINGS = {  # name -> (bfloat16 autocast, channels-last)
    "fp32": (False, False),
    "fp32_channels_last": (False, True),
    "bf16": (True, False),
    "bf16_channels_last": (True, True),
}


def _append(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed(args) -> list[dict]:
    import torch
    from torch import nn

    from xraylib.torch_model import build_model

    rows = []
    for arch in args.archs:
        for size in args.sizes:
            for threads in args.threads:
                for name in args.settings:
                    bf16, channels_last = SPEED_SETTINGS[name]
                    torch.manual_seed(0)
                    torch.set_num_threads(threads)
                    model = build_model(arch, 4, "none").train()
                    x = torch.randn(args.batch_size, 3, size, size)
                    y = torch.randint(0, 4, (args.batch_size,))
                    if channels_last:
                        model = model.to(memory_format=torch.channels_last)
                        x = x.contiguous(memory_format=torch.channels_last)
                    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
                    criterion = nn.CrossEntropyLoss()
                    times = []
                    for _ in range(args.repeats + 1):
                        start = time.perf_counter()
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                            loss = criterion(model(x).float(), y)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        times.append(time.perf_counter() - start)
                    best = min(times[1:])
                    row = {"arch": arch, "image_size": size, "threads": threads, "setting": name,
                           "batch_size": args.batch_size, "images_per_s": round(args.batch_size / best, 1),
                           "cpu": _cpu(), "torch": torch.__version__}
                    print(row, flush=True)
                    rows.append(row)
    return rows


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def recipe(args) -> list[dict]:
    import torch

    from sklearn.metrics import f1_score

    from xraylib import torch_evaluate, torch_train

    manifest = data.load_manifest("multiclass", config.user_path(args.manifest))
    params = config.load_params()
    shared = {**torch_train.shared_settings(params), "image_size": args.image_size, "epochs": args.epochs,
              "learning_rate": args.learning_rate, "num_threads": args.threads, "num_workers": args.num_workers,
              "batch_size": args.batch_size, "weights": args.weights, "precise_bn": args.precise_bn}
    rows = []
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        overrides = dict(item.split("=", 1) for item in sets.split(",") if item)
        overrides = {key: _value(value) for key, value in overrides.items()}
        run = {"arch": args.arch, "step_lr": False, **overrides}
        cfg = torch_train.build_configs({name: run}, **shared)[0]
        out = config.user_path(args.work) / name
        start = time.perf_counter()
        result = torch_train.train(cfg, manifest, out, resume=False, verbose=True)
        seconds = time.perf_counter() - start
        y_true, y_prob = torch_evaluate.split_probabilities(result.best_path, manifest, "val",
                                                            batch_size=64)[:2]
        pred = y_prob.argmax(1)
        row = {"variant": name, "arch": args.arch, "settings": sets, "image_size": cfg.image_size,
               "epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "weights": Path(str(cfg.weights)).name,
               "best_epoch": result.best_epoch, "val_accuracy": round(float((pred == y_true).mean()), 4),
               "val_macro_f1": round(float(f1_score(y_true, pred, average="macro")), 4),
               "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), "cpu": _cpu()}
        print(row, flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("speed", help="training throughput per architecture and numeric setting")
    p.add_argument("--archs", nargs="+", default=["resnet18", "densenet121", "resnet50", "squeezenet",
                                                  "efficientnet_lite0", "xception"])
    p.add_argument("--sizes", nargs="+", type=int, default=[96, 160])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--settings", nargs="+", default=list(SPEED_SETTINGS), choices=list(SPEED_SETTINGS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="reports/benchmarks/torch_cpu_speed.csv")
    r = sub.add_parser("recipe", help="short trainings under recipe variants (validation figures)")
    r.add_argument("--manifest", required=True, help="a prepared multiclass manifest folder")
    r.add_argument("--arch", default="resnet18")
    r.add_argument("--weights", default="none")
    r.add_argument("--image-size", type=int, default=64)
    r.add_argument("--epochs", type=int, default=4)
    r.add_argument("--learning-rate", type=float, default=0.001)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--num-workers", type=int, default=1)
    r.add_argument("--precise-bn", type=ast.literal_eval, default=True)
    r.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE,KEY=VALUE",
                   help="a recipe variant: run settings that override the shared ones")
    r.add_argument("--work", default="build/torch_cpu_recipe")
    r.add_argument("--out", default="reports/benchmarks/torch_cpu_recipe.csv")
    args = parser.parse_args(argv)
    rows = speed(args) if args.part == "speed" else recipe(args)
    _append(config.user_path(args.out), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
