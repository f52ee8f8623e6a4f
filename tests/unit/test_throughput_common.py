"""The throughput benchmarks' shared helpers (benchmarks/throughput_common.py): repeats and their summary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import throughput_common  # noqa: E402  (a script folder, not a package)


def test_repeats_alternate_the_order_of_the_variants():
    calls = []

    def measure(spec):
        calls.append(spec["name"])
        return {"images_per_s": len(calls)}

    specs = {key: {"name": key} for key in ("a", "b", "c")}
    results = throughput_common.interleaved(specs, 3, measure)
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert [r["a"]["images_per_s"] for r in results] == [1, 6, 7]
    with pytest.raises(ValueError, match="--repeats must be >= 1"):
        throughput_common.interleaved(specs, 0, measure)


def test_spread_gives_median_and_range_per_group_and_skips_failures():
    rows = [{"variant": "loader", "threads": 1, "ratio": r} for r in (0.9, 1.1, 1.0)]
    rows += [{"variant": "loader", "threads": 2, "ratio": r} for r in (0.8, "n/a")]
    table = throughput_common.spread(rows, ["variant", "threads"], ["ratio"])
    assert table.to_dict("records") == [
        {"variant": "loader", "threads": 1, "ratio": "1 [0.9, 1.1]", "repeats": 3},
        {"variant": "loader", "threads": 2, "ratio": "0.8", "repeats": 2},
    ]
