"""Train the binary Keras model with a profile (default kermany_cpu) without touching params.yaml.

What ``make repro PROFILE=kermany_cpu`` does through DVC, runnable beside other work:
params.yaml + the profile's overrides are written to ``<out>/params.yaml``, the
manifest is built into ``<out>/manifest`` (as ``xraylib prepare binary``), the model
goes to ``<out>/model`` and notebook 03 is executed with those parameters
(``xraylib --params <out>/params.yaml notebook train_binary``).

Note: the notebook writes its metrics, plots and figures to ``reports/`` as in a
DVC run; they are copied to ``<out>/reports``. Re-run the default profile
(``xraylib notebook train_binary``) to restore the default outputs.

Usage::

    python benchmarks/binary_real.py --profile kermany_cpu --out runs/kermany_cpu
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

import yaml

from xraylib import cli, config, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="kermany_cpu")
    parser.add_argument("--out", default="runs/kermany_cpu")
    args = parser.parse_args(argv)
    out = config.resolve(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = config.load_params()
    for dotted, value in cli.profile_overrides(args.profile).items():
        if not dotted.startswith(("data.binary.", "train_binary.")):
            continue
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    params["train_binary"]["manifest_dir"] = str(out / "manifest")
    params["train_binary"]["model_dir"] = str(out / "model")
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    xraylib = [sys.executable, "-m", "xraylib.cli", "--params", str(params_file)]
    started = time.time()
    summary = data.build_manifest("binary", params["data"], int(params["seed"]), out_dir=out / "manifest",
                                  progress=False)
    print(f"manifest: {summary['images']} images of {summary['patients']} patients, {summary['per_split']}")
    prepared = time.time()
    subprocess.run([*xraylib, "notebook", "train_binary"], check=True)
    trained = time.time()
    for name in ("notebooks/03_train_binary.ipynb", "metrics/binary.json", "figures/train_binary"):
        source = config.REPORTS_DIR / name
        target = out / "reports" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(source, target, dirs_exist_ok=True) if source.is_dir() else shutil.copy(source, target))
    print(f"profile {args.profile}: manifest {prepared - started:.0f} s, notebook {trained - prepared:.0f} s, "
          f"total {trained - started:.0f} s; model in {config.relative_to_project(out / 'model')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
