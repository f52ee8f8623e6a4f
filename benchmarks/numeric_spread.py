"""Spread of the headline training figures across numeric paths, and the tolerances derived from it.

Each argument is a finished regression run (``xraylib regression --numerics X --dir build/spread_X``), compared
with the committed reference (recorded on the default numeric path). For every headline figure the largest
absolute deviation over the runs is printed, with the tolerance rule used in ``tests/regression/tolerances.yaml``:
twice the largest deviation, at least 0.02 (two images of a ~100-image test split), rounded up to 0.01.

Usage::

    python benchmarks/numeric_spread.py build/spread_alt build/spread_alt2 --out reports/benchmarks/numeric_spread.csv

Runs measured on another machine are added with ``--previous reports/benchmarks/numeric_spread.csv``: its rows are
kept (except those of a run label measured again) and count in the spread, so the CSV accumulates machines and the
tolerances cover every numeric path measured so far (the ``cpu`` column says where each run was made).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math

import pandas as pd

from xraylib import config, regression

FLOOR = 0.02


def tolerance_rule(max_deviation: float) -> float:
    return math.ceil(max(2 * max_deviation, FLOOR) * 100 - 1e-9) / 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="scratch folders of finished regression runs")
    parser.add_argument("--out", default="reports/benchmarks/numeric_spread.csv")
    parser.add_argument("--previous", help="an earlier output CSV whose runs count too (other machines)")
    args = parser.parse_args(argv)
    root = config.project_root()
    reference = json.loads((root / regression.REFERENCE_FILE).read_text())["headline"]
    rows = []
    for run in args.runs:
        folder = config.user_path(run)
        values = regression.headline(folder / "reports" / "metrics")
        env_file = folder / "reports" / "metrics" / "environment.json"
        env = json.loads(env_file.read_text()) if env_file.is_file() else {}
        label = folder.name
        first = next(iter(env.values()), {})  # one stage's record: the machine is the same for all
        settings = first.get("numerics_env") or {k: v for k, v in first.get("env", {}).items() if v is not None}
        for name, ref in reference.items():
            got = values.get(name)
            deviation = None if got is None or ref is None else abs(got - ref)
            rows.append({"figure": name, "run": label, "reference": ref, "value": got, "deviation": deviation,
                         "env": json.dumps(settings), "cpu": first.get("cpu", "")})
    frame = pd.DataFrame(rows)
    if args.previous:
        previous = pd.read_csv(config.user_path(args.previous))
        previous = previous[~previous["run"].isin(frame["run"])]
        previous = previous[previous["figure"].isin(reference)]  # figures the reference still has
        if "cpu" not in previous:
            previous["cpu"] = "not recorded"
        frame = pd.concat([previous, frame], ignore_index=True)
    spread = frame.groupby("figure", sort=False)["deviation"].max().rename("max_deviation").to_frame()
    spread["tolerance_rule"] = spread["max_deviation"].fillna(0).map(tolerance_rule)
    groups = {}
    for name, row in spread.iterrows():
        family = next(p for p in ("binary.*", "multiclass.*.test.accuracy", "multiclass.*.test.macro_f1",
                                  "multiclass.*.test.macro_auc_ovr", "gradcam.*") if fnmatch.fnmatchcase(name, p))
        groups.setdefault(family, []).append(row["max_deviation"])
    out = config.user_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    pd.set_option("display.width", 200)
    print(spread.round(4).to_string())
    print("\nby family (largest deviation -> tolerance):")
    for family, deviations in groups.items():
        largest = max((d for d in deviations if d is not None and not math.isnan(d)), default=0.0)
        print(f"  {family:<34s} {largest:.4f} -> {tolerance_rule(largest):.2f}")
    print(f"\nper-run values -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
