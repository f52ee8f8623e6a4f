"""An offline ``dvc plots show`` page: one self-contained ``index.html`` that works from ``file://``.

dvc-render's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it
stays blank. :func:`write_page` runs ``dvc plots show`` with an HTML template that inlines
the copies vendored in ``xraylib/vendor/vega/`` (versions, sources and licences in its
README; ``tools/vendor_vega.sh`` updates them). The template has no ``{scripts}``
placeholder, which is where dvc-render would put its CDN ``<script src>`` tags; only
``{plot_divs}`` is filled. Image plots, if a project declares any, are copied by dvc next
to the page (``static/``) and referenced relatively, so the folder still works offline.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from xraylib import config

SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # in load order
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=\S+\s*$", re.M)
_SPEC = re.compile(r'<div id = "([^"]*)">\s*<script type = "text/javascript">\s*var spec = (.*);')  # VegaRenderer.DIV
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.I)
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC plots</title>
{inline_scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def vendored_script(name: str) -> str:
    """The text of one vendored file of ``xraylib/vendor/vega/`` (e.g. ``"vega.min.js"``)."""
    resource = importlib.resources.files("xraylib").joinpath("vendor", "vega", name)
    if not resource.is_file():
        raise FileNotFoundError(f"vendored script xraylib/vendor/vega/{name} is missing; "
                                f"run tools/vendor_vega.sh or reinstall xraylib")
    return resource.read_text(encoding="utf-8")


def html_template() -> str:
    """The page template for ``dvc plots show --html-template``: the three Vega scripts inline, then ``{plot_divs}``.

    Source-map comments are dropped (a browser would look for the ``.map`` files, which are not vendored).
    """
    blocks = []
    for name in SCRIPTS:
        code = _SOURCE_MAP.sub("", vendored_script(name))
        clashes = [s for s in ("</script", "{scripts}", "{plot_divs}", "{refresh_tag}") if s in code.lower()]
        if clashes:
            raise ValueError(f"vendored {name} contains {clashes[0]!r}, which would break the inlined page; "
                             f"expected minified code free of it (re-vendor or patch html_template)")
        blocks.append(f"    <script>/* {name} */\n{code}\n    </script>")
    return TEMPLATE.format(inline_scripts="\n".join(blocks))


def remote_scripts(html: str) -> list[str]:
    """The ``<script ... src=`` openings in ``html`` that load over the network (``http(s)://`` or ``//``)."""
    return [m.group(0) for m in _REMOTE_SCRIPT.finditer(html)]


def empty_plots(html: str) -> tuple[list[str], int]:
    """The ids of the Vega plots in a ``dvc plots show`` page that have no data (``var spec = {};``: their file
    is missing), and how many plots the page has in all (Vega and image plots)."""
    body = html.split("<body>", 1)[-1]
    specs = _SPEC.findall(body)
    return [name for name, spec in specs if spec.strip() == "{}"], len(specs) + body.count("<img ")


def write_page(out_dir: Path | str = "reports/plots_page", *, targets: list[str] | None = None) -> Path:
    """Render the project's DVC plots into ``<out_dir>/index.html``, a page that needs no network.

    Runs ``python -m dvc plots show`` (the dvc of this interpreter) at the project root
    (:data:`xraylib.config.PROJECT_ROOT`) with :func:`html_template`.

    Args:
        out_dir: the folder for ``index.html`` (and ``static/`` for image plots); a relative
            path is taken from the project root, like every path in ``params.yaml``.
        targets: plot files or folders to show, as ``dvc plots show`` takes them (relative to
            the project root); ``None`` shows every plot that ``dvc.yaml`` declares.

    Returns:
        The path of the written ``index.html``.

    Raises:
        TypeError: ``targets`` is one path rather than a list of them.
        ModuleNotFoundError: dvc is not installed for this interpreter.
        ValueError: dvc found no plots, or none with data (nothing has produced them yet: a
            plot whose file is missing shows empty when others have data), dvc failed, or the
            page would still load a script from the network.
    """
    if isinstance(targets, (str, Path)):
        raise TypeError(f"targets must be a list of plot paths, got the single path {str(targets)!r}; "
                        f"pass [{str(targets)!r}]")
    if importlib.util.find_spec("dvc") is None:
        raise ModuleNotFoundError(f"dvc is not installed for {sys.executable}; "
                                  f"install it with: pip install 'xraylib[notebooks]'")
    root = config.PROJECT_ROOT
    out = config.resolve(out_dir)
    page = out / "index.html"
    out.mkdir(parents=True, exist_ok=True)  # dvc-render creates only the last folder
    with tempfile.TemporaryDirectory(prefix="xraylib-plots-") as tmp:
        template = Path(tmp) / "template.html"
        template.write_text(html_template(), encoding="utf-8")
        command = [sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(template),
                   "-o", str(out), *(targets or [])]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    said = [line for line in said if line.startswith("ERROR")][:1] or said[:1]  # not dvc's "Having any troubles?"
    if done.returncode != 0:
        raise ValueError(f"dvc plots show failed (exit {done.returncode}) in {root}: {' '.join(said)}")
    if page.resolve().as_uri() not in done.stdout.split():  # dvc prints the page's URI once it has written it
        wanted = f"for {' '.join(targets)}" if targets else "declared in dvc.yaml"
        raise ValueError(f"dvc plots show wrote no page: no plots {wanted} in {root}"
                         f"{' (dvc: ' + said[0] + ')' if said else ''}; run `dvc repro` first to produce them")
    html = page.read_text(encoding="utf-8")
    empty, total = empty_plots(html)
    if total and len(empty) == total:
        raise ValueError(f"none of the {total} plots in {root} has data (no file for {', '.join(empty[:3])}"
                         f"{', ...' if total > 3 else ''}); run `dvc repro` first to produce them")
    remote = remote_scripts(html)
    if remote:
        raise ValueError(f"{page} still loads scripts from the network ({remote[0]}...); expected inlined scripts only")
    return page
