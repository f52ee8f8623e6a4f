#!/usr/bin/env bash
# Re-download the minified Vega, Vega-Lite and Vega-Embed builds into xraylib/vendor/vega/ from the
# npm registry, check each tarball against npm's `dist.integrity` (sha512), keep only the single-file
# minified UMD build and the LICENSE, and rewrite xraylib/vendor/vega/README.md (versions, tarball
# URLs and hashes, sha256 of every vendored file: tests/unit/test_plots_page.py checks them).
#   tools/vendor_vega.sh                                   the pinned versions below
#   tools/vendor_vega.sh vega@5.33.1 vega-embed@6.29.0    other versions of some of them
# Keep the majors that dvc-render's CDN <script> tags name (VegaRenderer.SCRIPTS in
# dvc_render/vega.py; dvc-render 1.0.2: vega@5, vega-lite@5, vega-embed@6): dvc fills the page with
# specs for those majors, and the test fails when they differ.
#
# vega's npm tarball ships no LICENSE; the LICENSE-vega already in the folder (the vega repository's
# BSD-3-Clause licence) is kept then. Needs curl, tar and python3; REGISTRY overrides the registry URL.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-https://registry.npmjs.org}
declare -A VERSION=([vega]=5.33.1 [vega-lite]=5.23.0 [vega-embed]=6.29.0)
for arg in "$@"; do
    name=${arg%@*}
    [[ $arg == *@* && -n ${VERSION[$name]:-} ]] || {
        echo "tools/vendor_vega.sh: expected vega@X.Y.Z, vega-lite@X.Y.Z or vega-embed@X.Y.Z, got '$arg'" >&2; exit 1; }
    VERSION[$name]=${arg#*@}
done

DEST=xraylib/vendor/vega
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
for name in vega vega-lite vega-embed; do
    version=${VERSION[$name]}
    curl -sSf "$REGISTRY/$name/$version" -o "$WORK/$name.json"
    curl -sSf "$REGISTRY/$name/-/$name-$version.tgz" -o "$WORK/$name-$version.tgz"
done

export REGISTRY DEST WORK VEGA=${VERSION[vega]} VEGA_LITE=${VERSION[vega-lite]} VEGA_EMBED=${VERSION[vega-embed]}
python3 - <<'EOF'
import base64
import hashlib
import json
import os
import sys
import tarfile
from pathlib import Path

dest, work, registry = Path(os.environ["DEST"]), Path(os.environ["WORK"]), os.environ["REGISTRY"]
versions = {"vega": os.environ["VEGA"], "vega-lite": os.environ["VEGA_LITE"], "vega-embed": os.environ["VEGA_EMBED"]}
packages, files = [], []
for name, version in versions.items():
    tarball = work / f"{name}-{version}.tgz"
    meta = json.loads((work / f"{name}.json").read_text())
    data = tarball.read_bytes()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if integrity != meta["dist"]["integrity"]:
        sys.exit(f"tools/vendor_vega.sh: {tarball.name} does not match npm's dist.integrity "
                 f"({integrity} != {meta['dist']['integrity']}); nothing written")
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        build = f"package/build/{name}.min.js"
        (dest / f"{name}.min.js").write_bytes(tar.extractfile(members[build]).read())
        files.append((f"{name}.min.js", f"`{build}` of {name} {version}"))
        licence = dest / f"LICENSE-{name}"
        if "package/LICENSE" in members:
            licence.write_bytes(tar.extractfile(members["package/LICENSE"]).read())
            files.append((licence.name, f"`package/LICENSE` of {name} {version}"))
        elif licence.is_file():
            files.append((licence.name, f"not in the {name} tarball: LICENSE of https://github.com/vega/{name}"))
        else:
            sys.exit(f"tools/vendor_vega.sh: the {name} tarball has no LICENSE and {licence} is absent; "
                     f"copy it from https://github.com/vega/{name}/blob/main/LICENSE and re-run")
    packages.append((name, version, meta.get("license", "?"), f"{registry}/{name}/-/{name}-{version}.tgz",
                     hashlib.sha256(data).hexdigest(), meta["dist"]["integrity"]))

lines = [
    "# Vendored Vega libraries",
    "",
    "Minified single-file (UMD) builds of Vega, Vega-Lite and Vega-Embed, copied unchanged from their npm",
    "tarballs, so that `xraylib.plots_page.write_page` can inline them into the `dvc plots show` page, which",
    "then works from `file://` with no network (dvc-render's own page loads them from a CDN). The majors are",
    "the ones dvc-render's CDN tags name (vega@5, vega-lite@5, vega-embed@6 in dvc-render 1.0.2).",
    "",
    "Written by `tools/vendor_vega.sh`, which checks every tarball against npm's `dist.integrity`; do not edit",
    "by hand. `tests/unit/test_plots_page.py` checks the versions and sha256 sums below.",
    "",
    "| package | version | licence | npm tarball | tarball sha256 | tarball sha512 (npm `dist.integrity`) |",
    "| --- | --- | --- | --- | --- | --- |",
    *(f"| {n} | {v} | {lic} | {url} | `{sha}` | `{integ}` |" for n, v, lic, url, sha, integ in packages),
    "",
    "| file | from | sha256 |",
    "| --- | --- | --- |",
    *(f"| {f} | {src} | `{hashlib.sha256((dest / f).read_bytes()).hexdigest()}` |" for f, src in files),
    "",
    "Licences: all three packages are BSD-3-Clause, (c) University of Washington Interactive Data Lab",
    "(`LICENSE-*`). The vega npm tarball ships no licence file; `LICENSE-vega` is the vega repository's",
    "(https://github.com/vega/vega/blob/main/LICENSE). Each bundle also contains the npm dependencies it",
    "does not load separately, under permissive licences: for example the d3-* modules and topojson-client",
    "(ISC) in vega; json-stringify-pretty-compact (MIT) in vega-lite; fast-json-patch (MIT), semver (ISC),",
    "vega-themes and vega-tooltip (BSD-3-Clause) in vega-embed.",
    "",
]
(dest / "README.md").write_text("\n".join(lines))
print(f"{dest}: " + ", ".join(f"{n} {v}" for n, v, *_ in packages))
EOF
