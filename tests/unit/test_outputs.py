"""Writers of JSON/CSV (xraylib.outputs) and figures (xraylib.plots): formats, folders, reproducible files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import outputs, plots


def test_json_is_plain_and_safe():
    data = {"a": np.float32(0.1234567891), "b": [np.int64(3), float("nan")], "c": np.array([1.0, math.inf]),
            4: {"d": (1, 2)}}
    assert outputs.to_json_safe(data) == {"a": 0.123457, "b": [3, None], "c": [1.0, None], "4": {"d": [1, 2]}}
    assert outputs.to_json_safe(np.float64(1 / 3), digits=None) == 1 / 3


def test_writers_take_an_output_folder_and_create_it(tmp_path):
    metrics = outputs.write_metrics({"auc": 0.98765432, "n": np.int64(5)}, "run", tmp_path / "a" / "b")
    assert metrics == tmp_path / "a" / "b" / "run.json"
    assert json.loads(metrics.read_text()) == {"auc": 0.987654, "n": 5}
    curve = outputs.write_plot_data(pd.DataFrame({"x": [0.123456789], "y": [1]}), "sub/curve", tmp_path / "p")
    assert curve.read_text() == "x,y\n0.123457,1\n"
    table = outputs.write_table(pd.DataFrame({"path": ["a.png"], "p": [0.5]}), tmp_path / "t" / "table.csv")
    assert table.read_text() == "path,p\na.png,0.5\n"


def test_figures_are_300_dpi_png_and_svg_and_the_same_bytes_every_time(tmp_path):
    def draw():
        fig, ax = plots.plt.subplots(figsize=(2, 1))
        ax.plot([0, 1], [0, 1])
        ax.set_title("t")
        return fig

    figures = [draw(), draw()]
    first = plots.save_figure(figures[0], "line", "sub", folder=tmp_path / "one")
    second = plots.save_figure(figures[1], "line", "sub", folder=tmp_path / "two")
    assert first == tmp_path / "one" / "sub" / "line.png"
    with Image.open(first) as image:
        assert image.info["dpi"] == pytest.approx((plots.DPI, plots.DPI), abs=0.5) and plots.DPI == 300
    for suffix in ("png", "svg"):
        assert first.with_suffix(f".{suffix}").read_bytes() == second.with_suffix(f".{suffix}").read_bytes()
    assert b"<svg" in first.with_suffix(".svg").read_bytes()
    assert not any(plots.plt.fignum_exists(f.number) for f in figures), "saved figures are closed"


def test_show_figure_outside_a_notebook_saves_and_closes(tmp_path, capsys):
    fig, _ = plots.plt.subplots()
    assert plots.show_figure(fig, "shown", folder=tmp_path) is None
    path = tmp_path / "shown.png"
    assert path.is_file() and path.with_suffix(".svg").is_file() and not plots.plt.fignum_exists(fig.number)
    assert capsys.readouterr().out == ""
