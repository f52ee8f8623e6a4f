"""Spread of the headline training figures across numeric paths, and the tolerances derived from it.

Each argument is a finished regression run (``xraylib regression --numerics X --dir build/spread_X``), compared
with the committed reference (recorded on the default numeric path). For every headline figure the largest
absolute deviation over the runs is printed, with the tolerance rule used in ``tests/regression/tolerances.yaml``:
twice the largest deviation, at least 0.02 (two images of a ~100-image test split), rounded up to 0.01.

Usage::

    python benchmarks/numeric_spread.py build/spread_alt build/spread_alt2 --out reports/benchmarks/numeric_spread.csv

Runs measured on another machine are added with ``--previous reports/benchmarks/numeric_spread.csv``: its rows are
kept (except those of a run label measured again) and count in the spread, so the CSV accumulates machines and the
tolerances cover every numeric path measured so far (the ``cpu`` column says where each run was made). Their
deviations are recomputed against the committed reference (each row keeps its ``value``), so the spread stays true
after the reference is recorded again; ``--add-reference OLD.json:LABEL`` adds a former reference file as one more
measured run (the path it was recorded on). ``--write-tolerances`` rewrites the figures' lines of
``tests/regression/tolerances.yaml`` by the rule (its comment header is kept; update the header's prose by hand).

After the study's default torch thread count went from 1 to 2 (2026-11-27) and the reference was recorded again::

    git show 'a140474:tests/regression/reference.json' > /tmp/reference_old.json  # the commit before
    python benchmarks/numeric_spread.py --previous reports/benchmarks/numeric_spread.csv \
        --add-reference /tmp/reference_old.json:xeon_default_1thread --write-tolerances
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


COLUMNS = ["figure", "run", "reference", "value", "deviation", "env", "cpu"]


def run_rows(reference: dict, values: dict, label: str, env: dict, cpu: str) -> list[dict]:
    """One CSV row per reference figure: the value one run (``label``) gave and its distance from the reference."""
    rows = []
    for name, ref in reference.items():
        got = values.get(name)
        rows.append({"figure": name, "run": label, "reference": ref, "value": got,
                     "deviation": None if got is None or ref is None else abs(got - ref),
                     "env": json.dumps(env), "cpu": cpu})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="scratch folders of finished regression runs")
    parser.add_argument("--out", default="reports/benchmarks/numeric_spread.csv")
    parser.add_argument("--previous", help="an earlier output CSV whose runs count too (other machines)")
    parser.add_argument("--add-reference", action="append", default=[], metavar="FILE:LABEL",
                        help="a former reference.json, counted as the run LABEL (the path it was recorded on)")
    parser.add_argument("--write-tolerances", action="store_true",
                        help=f"rewrite the figures' tolerances in {regression.TOLERANCES_FILE} by the rule")
    args = parser.parse_args(argv)
    root = config.project_root()
    reference = json.loads((root / regression.REFERENCE_FILE).read_text())["headline"]
    rows = []
    for spec in args.add_reference:
        path, _, label = spec.rpartition(":")
        if not path or not label:
            parser.error(f"--add-reference takes FILE:LABEL, got {spec!r}")
        former = json.loads(config.user_path(path).read_text())
        recorded = former.get("recorded_with", {})
        rows += run_rows(reference, former["headline"], label,
                         {"numerics": recorded.get("numerics", "default"), "former_reference": True},
                         recorded.get("cpu", ""))
    for run in args.runs:
        folder = config.user_path(run)
        values = regression.headline(folder / "reports" / "metrics")
        env_file = folder / "reports" / "metrics" / "environment.json"
        env = json.loads(env_file.read_text()) if env_file.is_file() else {}
        label = folder.name
        first = next(iter(env.values()), {})  # one stage's record: the machine is the same for all
        settings = first.get("numerics_env") or {k: v for k, v in first.get("env", {}).items() if v is not None}
        rows += run_rows(reference, values, label, settings, first.get("cpu", ""))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if args.previous:
        previous = pd.read_csv(config.user_path(args.previous))
        previous = previous[~previous["run"].isin(frame["run"])]
        previous = previous[previous["figure"].isin(reference)]  # figures the reference still has
        if "cpu" not in previous:
            previous["cpu"] = "not recorded"
        # deviations from the committed reference, which may have been recorded again since
        previous["reference"] = previous["figure"].map(reference)
        previous["deviation"] = (previous["value"] - previous["reference"]).abs()
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
    if args.write_tolerances:
        write_tolerances(root / regression.TOLERANCES_FILE, spread)
    return 0


def widest(name: str) -> float:
    """The widest tolerance that still checks something (tests/unit/test_regression_compare.py holds the file to it):
    0.3 for Grad-CAM scores (about 15 images per model, 1/15 each), 0.2 otherwise."""
    return 0.3 if name.startswith("gradcam.") else 0.2


def write_tolerances(path, spread: pd.DataFrame) -> None:
    """Replace the ``tolerances:`` mapping of ``path`` by the rule's values (comments before it are kept). A figure
    whose rule exceeds :func:`widest` is written as ``null``: reported, not compared."""
    text = path.read_text()
    head = text[:text.index("\ntolerances:\n") + len("\ntolerances:\n")]
    lines = []
    for name, row in spread.sort_index().iterrows():
        measured = "n/a (undefined on every path)" if pd.isna(row["max_deviation"]) else f"{row['max_deviation']:.4f}"
        if row["tolerance_rule"] > widest(name):
            lines.append(f'  "{name}": null   # measured {measured}; rule {row["tolerance_rule"]:.2f} > '
                         f'{widest(name)}: reported, not compared')
        else:
            lines.append(f'  "{name}": {row["tolerance_rule"]:.2f}   # measured {measured}')
    path.write_text(head + "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} tolerances to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
