"""Spread of the default multi-class demo under other numeric paths and seeds (issue: results that reproduce).

Trains the configured runs on the synthetic 4-class demo data with one recipe
variant under several numeric paths (torch intra-op threads) and seeds, and
prints the test accuracy and macro-F1 of each, so that a recipe can be chosen
whose headline figures agree across paths. Selection uses the **validation**
split's figures; the test figures are printed beside them for the record.

Usage::

    python benchmarks/default_recipe_torch.py --variant lr1e-3_e6_48px --image-size 48 --epochs 6 \
        --learning-rate 0.001 --paths t1s42 t2s42 t1s43 --out build/recipe_torch

One JSON line per (variant, path, run) is appended to ``<out>/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xraylib import config, data, synthetic


def prepare(out: Path, difficulty: float, seed: int, image_size: int = 128) -> Path:
    """Synthetic 4-class data at ``difficulty`` and its patient-level manifest (cached per difficulty)."""
    manifest_dir = out / f"data_d{difficulty}" / "processed"
    if (manifest_dir / "manifest.csv").is_file():
        return manifest_dir
    raw = out / f"data_d{difficulty}" / "raw"
    synthetic.generate(raw, "multiclass", image_size=image_size, difficulty=difficulty, seed=seed, overwrite=True)
    params = config.load_params()["data"]
    params = {**params, "multiclass": {**params["multiclass"], "source": "synthetic",
                                       "root": str(raw / "COVID-19_Radiography_Dataset")}}
    data.build_manifest("multiclass", params, seed, out_dir=manifest_dir, progress=False)
    return manifest_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="name of this recipe variant (for the table)")
    parser.add_argument("--image-size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.0001)
    parser.add_argument("--step-size", type=int, default=2)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--runs", nargs="*", default=[], help="run names (default all six)")
    parser.add_argument("--paths", nargs="+", default=["t1s42", "t2s42"],
                        help="numeric paths: t<threads>s<seed>, e.g. t1s42 t2s42 t1s43")
    parser.add_argument("--run-set", nargs="*", default=[], metavar="RUN:KEY=VALUE",
                        help="per-run overrides, e.g. squeezenet:learning_rate=0.0003")
    parser.add_argument("--out", default="build/recipe_torch")
    args = parser.parse_args(argv)

    import torch

    from xraylib import torch_evaluate, torch_train

    out = config.user_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = config.load_params()
    manifest_dir = prepare(out, args.difficulty, int(params["seed"]))
    manifest = data.load_manifest("multiclass", manifest_dir)
    spec = dict(params["train_multiclass"])
    spec.update(image_size=args.image_size, epochs=args.epochs, learning_rate=args.learning_rate,
                step_size=args.step_size)
    import yaml

    runs = {name: dict(run) for name, run in spec["runs"].items()}
    for item in args.run_set:
        name, setting = item.split(":", 1)
        key, value = setting.split("=", 1)
        runs[name][key] = yaml.safe_load(value)
    spec["runs"] = runs
    for path in args.paths:
        threads, seed = (int(x) for x in path[1:].split("s"))
        configs = torch_train.configs_from_params({**params, "seed": seed, "train_multiclass": {
            **spec, "num_threads": threads}}, args.runs)
        for cfg in configs:
            start = time.perf_counter()
            result = torch_train.train(cfg, manifest, out / "runs" / args.variant / path / cfg.name, resume=False,
                                       verbose=False)
            seconds = time.perf_counter() - start
            row = {"variant": args.variant, "path": path, "run": cfg.name, "seconds": round(seconds, 1),
                   "best_epoch": result.best_epoch}
            for split in ("val", "test"):
                report, _ = torch_evaluate.evaluate_split(result.best_path, manifest, split, n_resamples=1, seed=0)
                row[f"{split}_accuracy"] = round(report["accuracy"], 4)
                row[f"{split}_macro_f1"] = round(report["macro_f1"], 4)
            print(json.dumps(row), flush=True)
            with (out / "results.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        torch.set_num_threads(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
