"""The offline ``dvc plots`` page: the vendored Vega files are the ones their README names, and
:func:`xraylib.plots_page.write_page` inlines them into one page that loads nothing from the network.

The page test runs the real ``dvc plots show`` in a throw-away git + DVC project with one CSV plot
(about 3 s). Rendering in a browser is not tested here.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xraylib import config, plots_page

VENDOR = Path(plots_page.__file__).parent / "vendor" / "vega"
README = (VENDOR / "README.md").read_text()


def _table(header: str) -> list[list[str]]:
    """The rows of the README table whose header row starts with ``| header |``, cells stripped of backticks."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


PACKAGES = {row[0]: row for row in _table("package")}  # name -> [name, version, licence, url, sha256, sha512]
FILES = {row[0]: row for row in _table("file")}  # file -> [file, from, sha256]


def test_readme_names_the_three_packages_and_every_vendored_file():
    assert set(PACKAGES) == {"vega", "vega-lite", "vega-embed"}
    on_disk = {p.name for p in VENDOR.iterdir() if p.name != "README.md" and p.is_file()}
    assert on_disk == set(FILES), f"files without a README row or rows without a file: {on_disk ^ set(FILES)}"
    for name, version, licence, url, _sha256, integrity in PACKAGES.values():
        assert licence == "BSD-3-Clause" and (VENDOR / f"LICENSE-{name}").is_file()
        assert url == f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"
        assert integrity.startswith("sha512-")


@pytest.mark.parametrize("name", sorted(FILES))
def test_vendored_file_matches_its_readme_sha256(name):
    assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == FILES[name][2]


@pytest.mark.parametrize("name, pattern", [
    ("vega", r'\.version="(\d+\.\d+\.\d+)"'),
    ("vega-lite", r'"use strict";var n="(\d+\.\d+\.\d+)"'),
    ("vega-embed", r'const fn="(\d+\.\d+\.\d+)"'),
])
def test_vendored_build_is_the_version_the_readme_states(name, pattern):
    """Each minified build carries its own version string; it must be the README's."""
    code = (VENDOR / f"{name}.min.js").read_text()
    assert re.findall(pattern, code) == [PACKAGES[name][1]], f"{name}.min.js is not version {PACKAGES[name][1]}"


def test_vendored_majors_are_the_ones_dvc_render_loads_from_its_cdn():
    """dvc fills the page with specs for the majors its CDN tags name; re-vendor when dvc-render moves on."""
    vega = pytest.importorskip("dvc_render.vega")
    cdn = dict(re.findall(r"/npm/([a-z-]+)@(\d+)\.", vega.VegaRenderer.SCRIPTS))
    assert cdn == {name: row[1].split(".")[0] for name, row in PACKAGES.items()}


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A git + DVC project with dvc.yaml, params.yaml (the xraylib project markers) and no plot files yet."""
    pytest.importorskip("dvc")
    root = tmp_path_factory.mktemp("plots_project")
    (root / "params.yaml").write_text("seed: 0\n")
    (root / "dvc.yaml").write_text("plots:\n  - reports/plots/roc.csv:\n      x: fpr\n      y: tpr\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


def test_write_page_without_plot_data_says_to_run_dvc_repro(dvc_project, monkeypatch):
    monkeypatch.setenv(config.PROJECT_ENV, str(dvc_project))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    with pytest.raises(ValueError, match=r"run `dvc repro` first"):
        plots_page.write_page()


def test_write_page_inlines_vega_and_loads_nothing_from_the_network(dvc_project, monkeypatch):
    monkeypatch.setenv(config.PROJECT_ENV, str(dvc_project))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    plots = dvc_project / "reports" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (plots / "roc.csv").write_text("fpr,tpr\n0,0\n0.2,0.7\n1,1\n")

    page = plots_page.write_page()

    assert page == dvc_project / "reports" / "plots_page" / "index.html"
    html = page.read_text()
    for name in plots_page.SCRIPTS:
        assert plots_page.vendored_script(name).splitlines()[0] in html, f"{name} is not inlined"
    assert '<div id = "reports_plots_roc_csv">' in html and '"tpr": "0.7"' in html
    assert "<script src" not in html and "sourceMappingURL" not in html
    assert plots_page.remote_scripts(html) == [] and plots_page.empty_plots(html) == ([], 1)


def test_remote_scripts_finds_cdn_tags_and_empty_plots_finds_specs_without_data():
    cdn = '<script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script><script src=//x.org/a.js></script>'
    assert len(plots_page.remote_scripts(cdn)) == 2
    assert plots_page.remote_scripts('<script>var u = "https://vega.github.io/schema";</script>') == []
    body = ('<body><div id = "a">\n <script type = "text/javascript">\n  var spec = {};\n'
            '<div id = "b">\n <script type = "text/javascript">\n  var spec = {"data": 1};\n')
    assert plots_page.empty_plots(body) == (["a"], 2)
