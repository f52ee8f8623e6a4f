"""Data sources, the image manifest, patient-level splits and the leakage check.

Every source is read into the same manifest (one row per readable image):

==============  ==============================================================
column          meaning
==============  ==============================================================
path            image file (relative to the project root when inside it)
label           class name
patient_id      patient identifier parsed from the file name, else the file
source_split    split given by the source (``train``/``val``/``test`` or "")
subtype         Kermany pneumonia subtype from the file name (bacteria/virus)
width, height   size in pixels of the original file
mode            PIL mode of the original file (``L``, ``RGB``, ``I;16`` ...)
sha256          hash of the file bytes
duplicate_group shared by byte-identical files ("" when unique)
lesion_mask     ground-truth lesion mask (synthetic data only)
lung_mask       lung mask (COVID-19 Radiography masks/, synthetic lung_masks/)
split           train / val / test after :func:`assign_splits`
==============  ==============================================================

Files that cannot be decoded are not in the manifest: they go to a quarantine
table with the reason, and the run goes on. Raw files are only read.

Sources
-------
``synthetic``
    The generated demo data (:mod:`xraylib.synthetic`); labelled synthetic.
``kermany``
    Kaggle "chest-xray-pneumonia" (Kermany, Zhang, Goldbaum 2018, CC BY 4.0):
    ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``; any split may be missing.
``kermany3``
    The same images labelled NORMAL / BACTERIA / VIRUS from their file names.
``covid_radiography``
    COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021):
    ``COVID``, ``Lung_Opacity``, ``Normal``, ``Viral Pneumonia`` folders, each
    with ``images/`` and optionally ``masks/`` (lung masks).
``folder``
    Any class-per-folder root, optionally inside ``train/val/test`` folders.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from xraylib import config
from xraylib.images import IMAGE_SUFFIXES, ImageReadError, inspect_image

SOURCES = ("synthetic", "kermany", "kermany3", "covid_radiography", "folder")
SPLITS = ("train", "val", "test")
KERMANY_CLASSES = ("NORMAL", "PNEUMONIA")
KERMANY3_CLASSES = ("NORMAL", "BACTERIA", "VIRUS")
COVID_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
MANIFEST_COLUMNS = [
    "path", "label", "patient_id", "source_split", "subtype", "width", "height", "mode",
    "sha256", "duplicate_group", "lesion_mask", "lung_mask",
]
QUARANTINE_COLUMNS = ["path", "label", "reason"]

_PATIENT_PATTERNS = (
    # Kermany pneumonia: person1000_bacteria_2931.jpeg -> person1000
    (re.compile(r"^(person\d+)_", re.IGNORECASE), lambda m: m.group(1).lower()),
    # Kermany normals: IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg -> IM-0115 / IM-1427.
    # Both prefixes map to one id: if they are different people we only lose a
    # little split granularity, if they are the same person we avoid leakage.
    (re.compile(r"^(?:NORMAL\d*-)?IM-(\d+)-", re.IGNORECASE), lambda m: f"IM-{m.group(1)}"),
    # Synthetic data: synpat0012_1.png, COVID-synpat0012_1.png -> synpat0012
    (re.compile(r"(synpat\d+)_", re.IGNORECASE), lambda m: m.group(1).lower()),
)


def parse_patient_id(path: str | Path) -> str | None:
    """Return the patient id encoded in a file name, or ``None`` when it has none.

    >>> parse_patient_id("train/PNEUMONIA/person1000_bacteria_2931.jpeg")
    'person1000'
    >>> parse_patient_id("NORMAL2-IM-1427-0001.jpeg")
    'IM-1427'
    """
    name = Path(path).name
    for pattern, make_id in _PATIENT_PATTERNS:
        match = pattern.search(name)
        if match:
            return make_id(match)
    return None


def parse_kermany_subtype(path: str | Path) -> str:
    """``bacteria`` / ``virus`` from a Kermany pneumonia file name, else ``""``."""
    name = Path(path).name.lower()
    for subtype in ("bacteria", "virus"):
        if f"_{subtype}" in name:
            return subtype
    return ""


@dataclass
class ScanResult:
    """What a source scan found: readable images, quarantined files and warnings."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    root: str = ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_in(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _find_root(root: Path, inner: str) -> Path:
    """Accept either the dataset folder itself or a folder that contains it."""
    return root / inner if (root / inner).is_dir() else root


def _class_folders(source: str, root: Path) -> list[tuple[str, str, Path, Path | None]]:
    """List ``(source_split, class_name, image_folder, lung_mask_folder)`` for a source."""
    entries: list[tuple[str, str, Path, Path | None]] = []
    if source in ("kermany", "kermany3"):
        root = _find_root(root, "chest_xray")
        split_dirs = [d for d in _subdirs(root) if d.name.lower() in SPLITS]
        if not split_dirs:
            raise ValueError(
                f"Kermany root '{root}' has no split folders; expected chest_xray/{{train,val,test}}/"
                f"{{NORMAL,PNEUMONIA}} (any split may be missing). Point data.<task>.root at that folder."
            )
        for split_dir in split_dirs:
            for class_dir in _subdirs(split_dir):
                if class_dir.name.upper() not in KERMANY_CLASSES:
                    raise ValueError(
                        f"unknown class folder '{class_dir}' in Kermany data; expected only "
                        f"{list(KERMANY_CLASSES)}. Move it out of the data root or use source 'folder'."
                    )
                entries.append((split_dir.name.lower(), class_dir.name.upper(), class_dir, None))
    elif source == "covid_radiography":
        root = _find_root(root, "COVID-19_Radiography_Dataset")
        for class_dir in _subdirs(root):
            if class_dir.name in ("lesion_masks", "lung_masks"):
                continue
            if class_dir.name not in COVID_CLASSES:
                raise ValueError(
                    f"unknown class folder '{class_dir}' in COVID-19 Radiography data; expected "
                    f"{list(COVID_CLASSES)}. Move it out of the data root or use source 'folder'."
                )
            images = class_dir / "images"
            masks = class_dir / "masks"
            entries.append(("", class_dir.name, images if images.is_dir() else class_dir,
                            masks if masks.is_dir() else None))
    elif source == "folder":
        top = [d for d in _subdirs(root) if d.name not in ("lesion_masks", "lung_masks")]
        if top and all(d.name.lower() in SPLITS for d in top):
            for split_dir in top:
                entries += [(split_dir.name.lower(), c.name, c, None) for c in _subdirs(split_dir)]
        else:
            entries += [("", c.name, c, None) for c in top]
    else:  # pragma: no cover - guarded by scan_source
        raise ValueError(f"unknown source {source!r}")
    if not entries:
        raise ValueError(f"data root '{root}' has no class folders; expected one folder per class, e.g. NORMAL/ and PNEUMONIA/")
    return entries


def _dataset_root(source: str, root: Path) -> Path:
    if source in ("kermany", "kermany3"):
        return _find_root(root, "chest_xray")
    if source == "covid_radiography":
        return _find_root(root, "COVID-19_Radiography_Dataset")
    return root


def scan_source(source: str, root: str | Path, *, progress: bool = True) -> ScanResult:
    """Read a data source into a manifest and a quarantine table.

    Every file is decoded completely once, so truncated or non-image files are
    caught here (quarantined with the reason) instead of during training.

    Args:
        source: one of :data:`SOURCES` (``synthetic`` reads a generated root with
            the Kermany or COVID-19 Radiography layout, whichever it has).
        root: the dataset folder.
        progress: show a tqdm bar.

    Raises:
        ValueError: unknown source, unknown class folders, or no readable image at all.
        FileNotFoundError: ``root`` does not exist.
    """
    if source not in SOURCES:
        raise ValueError(f"data source must be one of {list(SOURCES)}, got {source!r}")
    root = config.resolve(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root '{root}' does not exist. Create it with `xraylib synthesize`, download the "
            f"Kaggle data with `xraylib download`, or point params.yaml data.<task>.root at your copy."
        )
    reader = source
    if source == "synthetic":
        reader = "kermany" if _find_root(root, "chest_xray") != root or (root / "train").is_dir() else "covid_radiography"
    dataset_root = _dataset_root(reader, root)
    folders = _class_folders(reader, root)

    rows, bad, notes = [], [], []
    for source_split, label, folder, mask_folder in folders:
        files = _files_in(folder) if folder.is_dir() else []
        if not files:
            notes.append(f"class folder '{folder}' is empty")
            continue
        for path in tqdm(files, desc=f"scan {source_split or 'all'}/{label}", disable=not progress, leave=False):
            shown = config.relative_to_project(path)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                bad.append({"path": shown, "label": label, "reason": f"not an image file (suffix '{path.suffix}')"})
                continue
            try:
                info = inspect_image(path)
            except ImageReadError as err:
                bad.append({"path": shown, "label": label, "reason": f"unreadable image: {err}"})
                continue
            subtype = parse_kermany_subtype(path) if label in ("PNEUMONIA",) else ""
            row_label = label
            if source == "kermany3":
                row_label = subtype.upper() if label == "PNEUMONIA" else label
                if not row_label:
                    bad.append({"path": shown, "label": label,
                                "reason": "cannot tell bacteria from virus: file name has neither"})
                    continue
            relative = path.relative_to(dataset_root)
            lesion = dataset_root / "lesion_masks" / relative
            lung = mask_folder / path.name if mask_folder is not None else dataset_root / "lung_masks" / relative
            rows.append({
                "path": shown,
                "label": row_label,
                "patient_id": parse_patient_id(path) or f"file:{relative.with_suffix('').as_posix()}",
                "source_split": source_split,
                "subtype": subtype,
                **info,
                "sha256": _sha256(path),
                "lesion_mask": config.relative_to_project(lesion) if lesion.is_file() else "",
                "lung_mask": config.relative_to_project(lung) if lung is not None and lung.is_file() else "",
            })
    manifest = pd.DataFrame(rows, columns=[c for c in MANIFEST_COLUMNS if c != "duplicate_group"])
    if manifest.empty:
        raise ValueError(f"no readable image under data root '{root}' (source {source!r}); "
                         f"{len(bad)} file(s) quarantined")
    manifest.insert(MANIFEST_COLUMNS.index("duplicate_group"), "duplicate_group", _duplicate_groups(manifest["sha256"]))
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return ScanResult(manifest, quarantine, notes, source, config.relative_to_project(root))


def _duplicate_groups(sha: pd.Series) -> list[str]:
    counts = sha.value_counts()
    dup_hashes = sorted(counts[counts > 1].index)
    names = {h: f"dup{i:04d}" for i, h in enumerate(dup_hashes, start=1)}
    return [names.get(h, "") for h in sha]


def leakage_groups(manifest: pd.DataFrame) -> np.ndarray:
    """Connected groups of images that must stay together: same patient or identical bytes.

    Returns an integer group id per row (union-find over patient ids and sha256).
    """
    parent = list(range(len(manifest)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in ("patient_id", "sha256"):
        first: dict[str, int] = {}
        for i, key in enumerate(manifest[column].to_numpy()):
            if key in first:
                a, b = find(i), find(first[key])
                if a != b:
                    parent[a] = b
            else:
                first[key] = i
    roots = [find(i) for i in range(len(manifest))]
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def _carve(frame: pd.DataFrame, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of rows for one stratified, group-aware fold of about ``fraction``."""
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"only {n_groups} patient groups; too few for a {fraction:.0%} split. Use more data.")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(iter(splitter.split(np.zeros(len(frame)), frame["label"].to_numpy(), groups)))
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(manifest: pd.DataFrame, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 42, keep_official_test: bool = True) -> pd.DataFrame:
    """Add a ``split`` column: stratified, patient-level train / val / test.

    * An official ``test`` split of the source is kept as the test split when
      ``keep_official_test`` (images of its patients elsewhere are marked
      ``excluded`` so they cannot leak); otherwise ``test_fraction`` of the
      patient groups is held out.
    * The official validation split (16 images in Kaggle's data) is pooled with
      train and ``val_fraction`` of all images is re-drawn from the pool by
      patient group, as the original notebook intended but without leakage.

    Groups join images that share a patient id or identical bytes, so neither a
    patient nor a duplicate file can sit in two splits.
    """
    for name, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 < value < 0.5:
            raise ValueError(f"{name} must be between 0 and 0.5 (exclusive), got {value!r}")
    frame = manifest.reset_index(drop=True).copy()
    groups = leakage_groups(frame)
    split = np.full(len(frame), "", dtype=object)
    official_test = frame["source_split"].eq("test").to_numpy() if keep_official_test else np.zeros(len(frame), bool)
    if official_test.any():
        split[official_test] = "test"
        test_groups = np.unique(groups[official_test])
        clash = np.isin(groups, test_groups) & ~official_test
        split[clash] = "excluded"
        pool = ~official_test & ~clash
        val_share = val_fraction
    else:
        test_mask = _carve(frame, groups, test_fraction, seed)
        split[test_mask] = "test"
        pool = ~test_mask
        val_share = val_fraction / (1.0 - test_fraction)
    pool_idx = np.flatnonzero(pool)
    val_mask = _carve(frame.iloc[pool_idx], groups[pool_idx], min(val_share, 0.5), seed + 1)
    split[pool_idx[val_mask]] = "val"
    split[pool_idx[~val_mask]] = "train"
    frame["split"] = split
    return frame


def check_leakage(manifest: pd.DataFrame) -> dict:
    """Count patients and identical files (sha256) that appear in more than one split.

    Rows with split ``excluded`` are ignored. Returns a dict with the counts and
    up to five examples of each: patient ids, and for identical files their paths
    joined by `` = `` (the hash prefix when the manifest has no ``path`` column).
    """
    used = manifest[manifest["split"].isin(SPLITS)]
    report: dict = {}
    for column, name in (("patient_id", "patients"), ("sha256", "identical_files")):
        n_splits = used.groupby(column)["split"].nunique()
        shared = sorted(n_splits[n_splits > 1].index)
        report[f"{name}_in_several_splits"] = len(shared)
        examples = [str(s) for s in shared[:5]]
        if column == "sha256":
            paths = used.groupby("sha256")["path"] if "path" in used.columns else None
            examples = [" = ".join(sorted(map(str, paths.get_group(s)))) if paths is not None else str(s)[:16]
                        for s in shared[:5]]
        report[f"{name}_examples"] = examples
    return report


def assert_no_leakage(manifest: pd.DataFrame) -> dict:
    """Raise ``ValueError`` if any patient or identical file sits in two splits; else return the report."""
    report = check_leakage(manifest)
    if report["patients_in_several_splits"] or report["identical_files_in_several_splits"]:
        raise ValueError(
            "leakage between splits: "
            f"{report['patients_in_several_splits']} patient(s) {report['patients_examples']} and "
            f"{report['identical_files_in_several_splits']} identical file(s) {report['identical_files_examples']} "
            "appear in more than one split. Splits must be made by patient group (assign_splits)."
        )
    return report


def split_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, with totals and patients per split."""
    used = manifest[manifest["split"].isin(SPLITS)]
    table = pd.crosstab(used["label"], used["split"]).reindex(columns=list(SPLITS), fill_value=0)
    table.loc["total"] = table.sum()
    table.loc["patients"] = [used.loc[used["split"] == s, "patient_id"].nunique() for s in SPLITS]
    table["all"] = table.sum(axis=1)
    table.loc["patients", "all"] = used["patient_id"].nunique()
    return table


def data_root_for(task: str, data_params: dict) -> tuple[str, Path]:
    """Return ``(source, root)`` for a task from the ``data`` section of params.yaml."""
    if task not in config.TASKS:
        raise ValueError(f"task must be one of {config.TASKS}, got {task!r}")
    spec = config.section({"data": data_params}, f"data.{task}")
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"data.{task}.source must be one of {list(SOURCES)}, got {source!r}")
    if source == "synthetic" and not spec.get("root"):
        inner = "chest_xray" if task == "binary" else "COVID-19_Radiography_Dataset"
        return source, config.SYNTHETIC_DIR / inner
    if not spec.get("root"):
        raise ValueError(f"data.{task}.root must name the dataset folder for source {source!r}")
    return source, config.resolve(spec["root"])


def build_manifest(task: str, data_params: dict, seed: int, out_dir: str | Path | None = None,
                   *, progress: bool = True) -> dict:
    """Scan the task's source, split it by patient, check leakage and write the results.

    Writes ``manifest.csv`` (with the split), ``quarantine.csv`` and
    ``summary.json`` to ``out_dir`` (default ``data/processed/<task>``).

    Raises:
        ValueError: leakage detected, or bad parameters.

    Returns:
        The summary dict (also suitable as DVC metrics).
    """
    source, root = data_root_for(task, data_params)
    out_dir = config.resolve(out_dir) if out_dir else config.PROCESSED_DIR / task
    scan = scan_source(source, root, progress=progress)
    manifest = assign_splits(
        scan.manifest,
        val_fraction=float(data_params.get("val_fraction", 0.15)),
        test_fraction=float(data_params.get("test_fraction", 0.15)),
        seed=int(seed),
        keep_official_test=bool(data_params.get("keep_official_test", True)),
    )
    leakage = assert_no_leakage(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    scan.quarantine.to_csv(out_dir / "quarantine.csv", index=False)
    used = manifest[manifest["split"].isin(SPLITS)]
    summary = {
        "task": task,
        "source": source,
        "synthetic": source == "synthetic",
        "root": scan.root,
        "classes": sorted(manifest["label"].unique().tolist()),
        "images": int(len(used)),
        "patients": int(used["patient_id"].nunique()),
        "quarantined": int(len(scan.quarantine)),
        "excluded_for_leakage": int((manifest["split"] == "excluded").sum()),
        "duplicate_files": int((manifest["duplicate_group"] != "").sum()),
        "per_split": {s: int((used["split"] == s).sum()) for s in SPLITS},
        "per_class": {k: int(v) for k, v in used["label"].value_counts().sort_index().items()},
        "leakage_patients": leakage["patients_in_several_splits"],
        "leakage_identical_files": leakage["identical_files_in_several_splits"],
        "warnings": scan.warnings,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_manifest(task: str, processed_dir: str | Path | None = None) -> pd.DataFrame:
    """Read ``data/processed/<task>/manifest.csv`` written by the data stage.

    Raises:
        FileNotFoundError: with the command that creates it.
    """
    path = (config.resolve(processed_dir) if processed_dir else config.PROCESSED_DIR / task) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found; run `dvc repro prepare_{task}` first")
    return pd.read_csv(path, keep_default_na=False, dtype={"patient_id": str, "sha256": str, "source_split": str})


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Sorted class names: the label order (index = class id) used by every model."""
    return sorted(manifest["label"].unique().tolist())


def load_summary(task: str, processed_dir: str | Path | None = None) -> dict:
    """The ``summary.json`` the data stage wrote for ``task``."""
    folder = config.resolve(processed_dir) if processed_dir else config.PROCESSED_DIR / task
    path = folder / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `dvc repro prepare_{task}` first")
    return json.loads(path.read_text())


def load_quarantine(task: str, processed_dir: str | Path | None = None) -> pd.DataFrame:
    """Files the data stage left out, with the reason."""
    folder = config.resolve(processed_dir) if processed_dir else config.PROCESSED_DIR / task
    return pd.read_csv(folder / "quarantine.csv", keep_default_na=False)


def sample_per_class(manifest: pd.DataFrame, n: int, seed: int = 0, split: str | None = None) -> pd.DataFrame:
    """Up to ``n`` random rows per class (optionally from one split), reproducible from ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    frame = manifest if split is None else manifest[manifest["split"] == split]
    parts = [group.sample(min(n, len(group)), random_state=seed) for _, group in frame.groupby("label", sort=True)]
    return pd.concat(parts).reset_index(drop=True)


def patients_per_class(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images, patients and images per patient for each class."""
    grouped = manifest.groupby("label")
    table = pd.DataFrame({"images": grouped.size(), "patients": grouped["patient_id"].nunique()})
    table["images_per_patient"] = (table["images"] / table["patients"]).round(2)
    table["max_images_one_patient"] = grouped["patient_id"].agg(lambda s: s.value_counts().max())
    return table


def duplicate_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Byte-identical files: one row per duplicate group with its size, classes and patients."""
    dups = manifest[manifest["duplicate_group"] != ""]
    if dups.empty:
        return pd.DataFrame(columns=["files", "labels", "patients", "splits"])
    return dups.groupby("duplicate_group").agg(
        files=("path", "size"),
        labels=("label", lambda s: ",".join(sorted(set(s)))),
        patients=("patient_id", "nunique"),
        splits=("split", lambda s: ",".join(sorted(set(s)))),
    )
