"""Data sources, the image manifest, patient-level splits and the leakage check.

Every source is read into the same manifest (one row per readable image):

====================  ==============================================================
column                meaning
====================  ==============================================================
path                  image file (relative to the project root when inside it)
label                 class name
patient_id            patient identifier parsed from the file name, else
                      ``file:<path>`` (one "patient" per image: an image-level split)
source_split          split given by the source (``train``/``val``/``test`` or "")
subtype               Kermany pneumonia subtype from the file name (bacteria/virus)
width, height         size in pixels of the original file
mode                  PIL mode of the original file (``L``, ``RGB``, ``I;16`` ...)
sha256                hash of the file bytes
duplicate_group       shared by byte-identical files ("" when unique)
near_duplicate_group  shared by near-identical images of one label that are not
                      byte-identical, e.g. re-encoded copies ("" when none)
leakage_group         the group of :func:`leakage_groups` (``g00001`` ...): images
                      that must stay in one split (patient, identical bytes,
                      near-duplicates); the cluster for a patient-level bootstrap
lesion_mask           ground-truth lesion mask (synthetic data only)
lung_mask             lung mask (COVID-19 Radiography masks/, synthetic lung_masks/)
split                 train / val / test after :func:`assign_splits`
====================  ==============================================================

Files that cannot be decoded are not in the manifest: they go to a quarantine
table with the reason, and the run goes on. Raw files are only read.

Rules for what a scan reads (the same for ``prepare``, ``evaluate`` and ``predict``):

* A class folder is read **recursively**, as ``xraylib predict`` reads folders;
  images in subfolders keep the class of the class folder and are counted
  (``nested_images`` in the summary). Mask folders (``masks``, ``lung_masks``,
  ``lesion_masks``) are not images. Links to folders are not followed (no loops).
* Hidden files and folders (``.name``) are skipped and counted.
* Where class folders belong, a file with an image suffix or none, or a broken link,
  is an error; documents (README, metadata sheets) are ignored.
* A file that cannot be decoded completely, is larger than Pillow's
  decompression-bomb limit, cannot be opened (permission) or exhausts memory is
  quarantined with the reason; a class folder that cannot be listed likewise.
* The same picture under two labels, byte-identical or near-identical (perceptual
  hash candidates confirmed on 64x64 thumbnails, :func:`near_identical_pairs`), is a
  **label conflict**: every image of the conflict is left out and listed in
  ``label_conflicts.csv``. Near-identical images under one label are kept, share a
  ``near_duplicate_group`` and one split, and are listed in ``near_duplicates.csv``.
  The rule finds re-encoded and rescaled copies (JPEG quality 30 to 95, 1.5x and 2x:
  thumbnails < 1 grey level apart); it does not find cropped or re-framed copies (a
  1-pixel border trim of a 224-pixel image moves them about 2 grey levels, a 2-pixel
  trim about 4) nor copies with changed brightness or contrast.
* Where a file name carries no patient id, the image is its own "patient": the split is
  image-level for it, and :func:`build_manifest` says so (a warning and ``split_level``).
* Near-identical images in OTHER configured sources (the other task's root, every
  ``data.external`` root, the folders of ``data.<task>.compare_with``) are found by the
  same rule (:func:`cross_source_pairs`) and only reported: ``cross_source_duplicates.csv``,
  the summary's ``cross_source_duplicates`` and one warning per source with matches.
  Splits and leakage groups do not change (the other folders are other data sets).
* ``prepare`` fails, naming the folder, when a class of the task has no usable image.

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
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from xraylib import config, outputs
from xraylib.images import IMAGE_SUFFIXES, THUMBNAIL_SIZE, ImageReadError, inspect_image

SOURCES = ("synthetic", "kermany", "kermany3", "covid_radiography", "folder")
SPLITS = ("train", "val", "test")
KERMANY_CLASSES = ("NORMAL", "PNEUMONIA")
KERMANY3_CLASSES = ("NORMAL", "BACTERIA", "VIRUS")
COVID_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
MANIFEST_COLUMNS = [
    "path", "label", "patient_id", "source_split", "subtype", "width", "height", "mode",
    "sha256", "duplicate_group", "near_duplicate_group", "leakage_group", "lesion_mask", "lung_mask",
]
QUARANTINE_COLUMNS = ["path", "label", "reason"]
CONFLICT_COLUMNS = ["conflict_group", "path", "label", "patient_id", "sha256", "evidence"]
NEAR_DUPLICATE_COLUMNS = ["near_duplicate_group", "path_a", "path_b", "label_a", "label_b", "patient_a", "patient_b",
                          "hash_bits", "mean_difference", "split_a", "split_b"]
PAIR_COLUMNS = ["a", "b", "hash_bits", "mean_difference"]
# cross_source_duplicates.csv: an image of this task's manifest (path, label, split) and a near-identical image of
# another configured source (other_source as configured, other_path inside it, other_label = its folder name)
CROSS_SOURCE_COLUMNS = ["path", "label", "split", "other_source", "other_path", "other_label", "hash_bits",
                        "mean_difference"]
MASK_FOLDERS = ("masks", "lung_masks", "lesion_masks")
# Files beside class folders that are documentation, not misplaced images (the COVID-19 Radiography
# download has README.md.txt and one metadata .xlsx per class at its root).
DOCUMENT_SUFFIXES = (".md", ".txt", ".rst", ".csv", ".tsv", ".xlsx", ".xls", ".json", ".yaml", ".yml", ".pdf",
                     ".html", ".zip")
# Near-identical images: perceptual hashes (imagehash.phash, 64 bits) at most this many bits apart are
# candidates, confirmed when their 64x64 thumbnails differ by at most this mean absolute grey level (of 255).
# Measured (benchmarks/README.md): different patients' images differ by >= 14 (Kermany train, 5,216 images)
# and >= 5.9 (synthetic demo data); the same picture re-encoded differs by < 1. One rule for label conflicts
# (pairs under two labels) and near-duplicate groups (pairs under one label).
NEAR_IDENTICAL_HASH_BITS = 8
NEAR_IDENTICAL_MEAN_DIFFERENCE = 2.0

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


# Patient ids the Kermany patterns above give (the caveat of the data report applies to them).
_KERMANY_ID = re.compile(r"^(?:person\d+|IM-\d+)$")
FILE_ID_PREFIX = "file:"
KERMANY_ID_CAVEAT = (
    "Kermany patient ids are the numbers in the file names, taken as published: personN in pneumonia names "
    "(personN_bacteria_K, personN_virus_K) and IM-NNNN in normal names (IM-NNNN-K and NORMAL2-IM-NNNN-K are both "
    "read as IM-NNNN, so if they are two children they are kept together: a coarser split, no leakage). "
    "person and IM numbers are separate numbering schemes that cannot be matched: a child with images in both "
    "classes, or under two numbers, is not grouped (only byte-identical and near-identical copies are)."
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
    """What a source scan found: usable images, quarantined files, label conflicts and warnings.

    ``counts`` holds ``nested_images`` (read from subfolders of class folders) and
    ``hidden_skipped``; ``classes`` maps each class folder's label to what was found
    for it (``folders``, ``files``, ``quarantined``, ``conflicts``, ``usable``).
    ``near_duplicates`` lists the near-identical pairs of usable images that are not
    byte-identical (:data:`NEAR_DUPLICATE_COLUMNS`, splits still empty). ``phashes``
    (``(n, 64)`` bool) and ``thumbnails`` (``(n, 64, 64)`` uint8) are the fingerprints of
    the manifest's rows, in its order (what :func:`cross_source_pairs` compares).
    """

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    root: str = ""
    conflicts: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CONFLICT_COLUMNS))
    counts: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    near_duplicates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NEAR_DUPLICATE_COLUMNS))
    phashes: np.ndarray | None = field(default=None, repr=False)
    thumbnails: np.ndarray | None = field(default=None, repr=False)

    def unusable_classes(self) -> dict[str, str]:
        """``{label: why}`` for class folders that gave no usable image."""
        empty = {}
        for label, found in self.classes.items():
            if found["usable"]:
                continue
            folders = ", ".join(f"'{f}'" for f in found["folders"])
            if not found["files"]:
                why = f"{folders} {'has' if len(found['folders']) == 1 else 'have'} no files"
            else:
                why = (f"all {found['files']} file(s) in {folders} were left out "
                       f"({found['quarantined']} quarantined, {found['conflicts']} label conflicts)")
            empty[label] = why
        return empty


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _list(folder: Path) -> list[Path]:
    """Entries of a dataset folder above the class level; an unlistable one is an error naming it."""
    try:
        return sorted(folder.iterdir())
    except PermissionError as err:
        raise ValueError(f"cannot list data folder '{folder}': permission denied") from err
    except OSError as err:
        raise ValueError(f"cannot list data folder '{folder}': {err.strerror or err}") from err


def _subdirs(folder: Path, *, strict: bool = True) -> list[Path]:
    """Non-hidden folders inside ``folder``, sorted.

    With ``strict``, ``folder`` is where class (or split) folders belong: a file with an
    image suffix or none, a broken link or a special file there is an error (it would
    otherwise be ignored without a word); documents such as README files are allowed.
    """
    found = []
    for entry in _list(folder):
        if entry.name.startswith((".", "__")):
            continue
        if entry.is_dir():
            found.append(entry)
        elif strict and not (entry.is_file() and entry.suffix.lower() in DOCUMENT_SUFFIXES):
            what = ("a file" if entry.is_file() else "a broken or looping link" if entry.is_symlink()
                    else "not a folder")
            raise ValueError(f"'{entry}' is {what} where a class folder belongs; put each image inside the "
                             f"folder of its class (e.g. '{folder / 'NORMAL'}/'), or move it out of the data root")
    return found


def walk_class_folder(folder: Path) -> tuple[list[Path], list[tuple[Path, str]], Counter]:
    """Files under a class folder, read recursively; returns ``(files, problems, counts)``.

    ``problems`` are ``(path, reason)`` for folders that cannot be listed and links to
    folders (not followed, so a link loop cannot hang the scan); ``counts`` has
    ``nested_images`` (files in subfolders) and ``hidden_skipped``. Mask folders
    directly inside the class folder are skipped. Files are sorted by path.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    counts: Counter = Counter()

    def unlistable(err: OSError) -> None:
        reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
        problems.append((Path(err.filename), f"folder cannot be listed: {reason}"))

    for here, dirs, names in os.walk(folder, onerror=unlistable):  # followlinks=False
        here = Path(here)
        keep = []
        for name in sorted(dirs):
            if name.startswith("."):
                counts["hidden_skipped"] += 1
            elif here == folder and name in MASK_FOLDERS:
                continue
            elif (here / name).is_symlink():
                problems.append((here / name, "link to a folder: not followed"))
            else:
                keep.append(name)
        dirs[:] = keep
        for name in names:
            if name.startswith("."):
                counts["hidden_skipped"] += 1
                continue
            files.append(here / name)
            if here != folder:
                counts["nested_images"] += 1
    return sorted(files), problems, counts


def _find_root(root: Path, inner: str) -> Path:
    """Accept either the dataset folder itself or a folder that contains it."""
    return root / inner if (root / inner).is_dir() else root


def _class_folders(source: str, root: Path) -> list[tuple[str, str, Path, Path | None]]:
    """List ``(source_split, class_name, image_folder, lung_mask_folder)`` for a source."""
    entries: list[tuple[str, str, Path, Path | None]] = []
    if source in ("kermany", "kermany3"):
        root = _find_root(root, "chest_xray")
        split_dirs = [d for d in _subdirs(root, strict=False) if d.name.lower() in SPLITS]
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
        top = [d for d in _subdirs(root) if d.name not in MASK_FOLDERS]
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
    phashes, thumbnails = [], []
    counts: Counter = Counter()
    classes: dict[str, dict] = {}
    for source_split, label, folder, mask_folder in folders:
        found = classes.setdefault(label, {"folders": [], "files": 0, "quarantined": 0, "conflicts": 0, "usable": 0})
        found["folders"].append(config.relative_to_project(folder))
        files, problems, folder_counts = walk_class_folder(folder) if folder.is_dir() else ([], [], Counter())
        counts.update(folder_counts)
        for path, reason in problems:
            bad.append({"path": config.relative_to_project(path), "label": label, "reason": reason})
        found["files"] += len(files)
        if not files:
            notes.append(f"class folder '{config.relative_to_project(folder)}' is empty")
            continue
        for path in tqdm(files, desc=f"scan {source_split or 'all'}/{label}", disable=not progress, leave=False):
            shown = config.relative_to_project(path)
            reason = _unusable(path)
            info = None
            if reason is None:
                try:
                    info = inspect_image(path, fingerprint=True)
                    digest = _sha256(path)
                except (ImageReadError, OSError) as err:
                    reason = f"unreadable image: {err}"
            subtype = parse_kermany_subtype(path) if label in ("PNEUMONIA",) else ""
            row_label = label
            if reason is None and source == "kermany3":
                row_label = subtype.upper() if label == "PNEUMONIA" else label
                if not row_label:
                    reason = "cannot tell bacteria from virus: file name has neither"
            if reason is not None:
                bad.append({"path": shown, "label": label, "reason": reason})
                found["quarantined"] += 1
                continue
            relative = path.relative_to(dataset_root)
            lesion = dataset_root / "lesion_masks" / relative
            lung = mask_folder / path.name if mask_folder is not None else dataset_root / "lung_masks" / relative
            phashes.append(info.pop("phash"))
            thumbnails.append(info.pop("thumbnail"))
            rows.append({
                "path": shown,
                "label": row_label,
                "patient_id": parse_patient_id(path) or f"file:{relative.with_suffix('').as_posix()}",
                "source_split": source_split,
                "subtype": subtype,
                **info,
                "sha256": digest,
                "lesion_mask": config.relative_to_project(lesion) if lesion.is_file() else "",
                "lung_mask": config.relative_to_project(lung) if lung is not None and lung.is_file() else "",
                "_folder_label": label,
            })
    derived = ("duplicate_group", "near_duplicate_group", "leakage_group")
    frame = pd.DataFrame(rows, columns=[c for c in MANIFEST_COLUMNS if c not in derived] + ["_folder_label"])
    pairs = near_identical_pairs(phashes, thumbnails)
    conflicts = label_conflicts(frame, pairs)
    in_conflict = frame["path"].isin(conflicts["path"]).to_numpy()
    if len(conflicts):
        for label, n in frame.loc[in_conflict, "_folder_label"].value_counts().items():
            classes[label]["conflicts"] += int(n)
        notes.append(f"{len(conflicts)} image(s) in {conflicts['conflict_group'].nunique()} label conflict(s) "
                     "(the same picture under different labels) left out; see label_conflicts.csv")
        frame = frame[~in_conflict]
    for label, n in frame["_folder_label"].value_counts().items():
        classes[label]["usable"] = int(n)
    manifest = frame.drop(columns="_folder_label").reset_index(drop=True)
    if manifest.empty:
        raise ValueError(f"no usable image under data root '{root}' (source {source!r}); "
                         f"{len(bad)} file(s) quarantined, {len(conflicts)} in label conflicts")
    kept_phashes = np.asarray(phashes, dtype=bool).reshape(len(in_conflict), -1)[~in_conflict]
    kept_thumbnails = np.asarray(thumbnails, dtype=np.uint8)[~in_conflict]
    # pairs among the images kept (a pair under two labels is a conflict, so those left are under one label)
    index = np.full(len(in_conflict), -1)
    index[~in_conflict] = np.arange(len(manifest))
    pairs = pairs.assign(a=index[pairs["a"].to_numpy()], b=index[pairs["b"].to_numpy()])
    pairs = pairs[(pairs["a"] >= 0) & (pairs["b"] >= 0)].reset_index(drop=True)
    manifest.insert(MANIFEST_COLUMNS.index("duplicate_group"), "duplicate_group", _duplicate_groups(manifest["sha256"]))
    near_groups, near_duplicates = _near_duplicates(manifest, pairs)
    manifest.insert(MANIFEST_COLUMNS.index("near_duplicate_group"), "near_duplicate_group", near_groups)
    manifest.insert(MANIFEST_COLUMNS.index("leakage_group"), "leakage_group", leakage_group_names(manifest))
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS)
    if counts["nested_images"]:
        notes.append(f"{counts['nested_images']} image file(s) read from subfolders of class folders "
                     "(class folders are read recursively)")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return ScanResult(manifest, quarantine, notes, source, config.relative_to_project(root), conflicts,
                      {"nested_images": counts["nested_images"], "hidden_skipped": counts["hidden_skipped"]}, classes,
                      near_duplicates, kept_phashes, kept_thumbnails)


def collect_images(inputs) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files from files and folders given on a command line; returns ``(files, skipped)``.

    Folders are read recursively by the rules of :func:`walk_class_folder` (hidden
    entries ignored, links to folders not followed); inside folders only files with an
    image suffix are taken, others are skipped with the reason. A file named directly is
    taken whatever its suffix (decoding decides); a path that does not exist is skipped.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found, problems, _ = walk_class_folder(path)
            skipped += [(str(p), reason) for p, reason in problems]
            for child in found:
                reason = _unusable(child)
                if reason is None:
                    files.append(child)
                else:
                    skipped.append((str(child), reason))
            if not found and not problems:
                skipped.append((str(path), "folder has no files"))
        elif path.is_file():
            files.append(path)
        else:
            skipped.append((str(path), "no such file or folder" if not path.is_symlink() else _unusable(path)))
    return files, skipped


def _unusable(path: Path) -> str | None:
    """Why ``path`` cannot be an image before opening it (not a regular file, suffix), else ``None``."""
    if not path.is_file():
        return ("not a regular file (a broken or looping link)" if path.is_symlink()
                else "not a regular file (a socket, device or pipe)")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix '{path.suffix}')"
    return None


def near_identical_pairs(phashes, thumbnails, *, max_hash_bits: int = NEAR_IDENTICAL_HASH_BITS,
                         max_mean_difference: float = NEAR_IDENTICAL_MEAN_DIFFERENCE) -> pd.DataFrame:
    """Every pair of images that shows the same picture, whatever their labels (columns :data:`PAIR_COLUMNS`).

    Candidates are rows whose perceptual hashes (``phashes``: 64 booleans per row, from
    imagehash) are at most ``max_hash_bits`` apart; a candidate is confirmed when the
    rows' 64x64 ``thumbnails`` differ by at most ``max_mean_difference`` grey levels (of
    255) on average. Byte-identical files are found too. ``a < b`` are row positions.
    """
    return _confirmed_pairs(phashes, thumbnails, None, None, max_hash_bits, max_mean_difference)


def cross_source_pairs(phashes, thumbnails, other_phashes, other_thumbnails, *,
                       max_hash_bits: int = NEAR_IDENTICAL_HASH_BITS,
                       max_mean_difference: float = NEAR_IDENTICAL_MEAN_DIFFERENCE) -> pd.DataFrame:
    """Pairs of an image of one set and an image of another that show the same picture (:data:`PAIR_COLUMNS`).

    The rule of :func:`near_identical_pairs`, applied to every (row ``a`` of the first
    set, row ``b`` of the other) pair. Measured on covid4_224 against kermany224/train
    (whose Viral Pneumonia and part of whose Normal images are Kermany images, resized and
    re-encoded on another path): the 1,270 matching pairs are at most 4 hash bits and 0.63
    grey levels apart, every other pair within 16 bits at least 11.4 grey levels; the
    exact rule finds all 1,099 Viral Pneumonia images, 163 Normal ones, no COVID and no
    Lung_Opacity image (a 64x64 Pearson correlation >= 0.95 finds the same images).
    """
    return _confirmed_pairs(phashes, thumbnails, other_phashes, other_thumbnails, max_hash_bits,
                            max_mean_difference)


def _confirmed_pairs(phashes, thumbnails, other_phashes, other_thumbnails, max_hash_bits: int,
                     max_mean_difference: float) -> pd.DataFrame:
    """Near-identical pairs within one set (``other_* is None``: ``a < b``) or between two sets."""
    same = other_phashes is None
    n, m = len(phashes), len(phashes) if same else len(other_phashes)
    if n < (2 if same else 1) or m < 1:
        return pd.DataFrame({"a": [], "b": [], "hash_bits": [], "mean_difference": []}).astype(
            {"a": int, "b": int, "hash_bits": int})
    packed = np.packbits(np.asarray(phashes, dtype=bool).reshape(n, -1), axis=1)
    other = packed if same else np.packbits(np.asarray(other_phashes, dtype=bool).reshape(m, -1), axis=1)
    words = packed.view(np.uint64).ravel() if packed.shape[1] == 8 else None
    other_words = other.view(np.uint64).ravel() if other.shape[1] == 8 else None
    found_a, found_b, found_bits = [], [], []
    for start in range(0, n, 1024):  # within one set: each row against itself and the rows after it
        stop, first = min(n, start + 1024), start if same else 0
        if words is not None and other_words is not None:
            distance = np.bitwise_count(words[start:stop, None] ^ other_words[None, first:])
        else:  # pragma: no cover - imagehash's default hash is 64 bits
            distance = np.unpackbits(packed[start:stop, None] ^ other[None, first:], axis=2).sum(axis=2)
        rows, cols = np.nonzero(distance <= max_hash_bits)
        if same:
            later = cols > rows
            rows, cols = rows[later], cols[later]
        found_a.append(rows + start)
        found_b.append(cols + first)
        found_bits.append(distance[rows, cols].astype(int))
    a, b, bits = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_bits)
    thumbs = np.asarray(thumbnails, dtype=np.int16).reshape(n, -1)
    other_thumbs = thumbs if same else np.asarray(other_thumbnails, dtype=np.int16).reshape(m, -1)
    difference = np.empty(len(a))
    for start in range(0, len(a), 4096):
        chunk = slice(start, start + 4096)
        difference[chunk] = np.abs(thumbs[a[chunk]] - other_thumbs[b[chunk]]).mean(axis=1)
    keep = difference <= max_mean_difference
    return pd.DataFrame({"a": a[keep], "b": b[keep], "hash_bits": bits[keep], "mean_difference": difference[keep]})


@dataclass
class Fingerprints:
    """The images of a folder tree as :func:`cross_source_pairs` compares them.

    ``files`` has ``path`` (inside the tree, posix) and ``label`` (the name of the image's
    folder; the folder above for a COVID-19 Radiography ``images/`` folder; "" at the top);
    ``phashes`` and ``thumbnails`` are in its order; ``unreadable`` counts files with an
    image suffix that could not be decoded (skipped).
    """

    files: pd.DataFrame
    phashes: np.ndarray
    thumbnails: np.ndarray
    unreadable: int = 0


def fingerprint_folder(root: str | Path, *, progress: bool = True) -> Fingerprints:
    """Fingerprint every image under ``root`` (any tree of images; class-per-folder or not).

    Read by the rules of :func:`walk_class_folder` (recursive, hidden entries and links to
    folders skipped); files without an image suffix and files in mask folders
    (:data:`MASK_FOLDERS`, at any depth) are not images. Hashed by
    :func:`xraylib.images.inspect_image`, as a source scan hashes its images.
    """
    root = Path(root)
    files, _, _ = walk_class_folder(root)
    rows, phashes, thumbnails, unreadable = [], [], [], 0
    for path in tqdm(files, desc=f"fingerprint {root.name}", disable=not progress, leave=False):
        relative = path.relative_to(root)
        if set(relative.parts[:-1]) & set(MASK_FOLDERS) or _unusable(path) is not None:
            continue
        try:
            info = inspect_image(path, fingerprint=True)
        except (ImageReadError, OSError):
            unreadable += 1
            continue
        folder = relative.parent
        if folder.name == "images" and folder.parent.name:
            folder = folder.parent
        rows.append({"path": relative.as_posix(), "label": folder.name})
        phashes.append(info["phash"])
        thumbnails.append(info["thumbnail"])
    if not rows:
        return Fingerprints(pd.DataFrame(columns=["path", "label"]), np.zeros((0, 64), dtype=bool),
                            np.zeros((0, THUMBNAIL_SIZE, THUMBNAIL_SIZE), dtype=np.uint8), unreadable)
    return Fingerprints(pd.DataFrame(rows, columns=["path", "label"]), np.asarray(phashes, dtype=bool),
                        np.asarray(thumbnails, dtype=np.uint8), unreadable)


def comparison_sources(task: str, data_params: dict) -> tuple[list[dict], list[str]]:
    """The other configured image folders that ``task``'s images are compared with; returns ``(sources, notes)``.

    In this order: the other task's root (``data.binary.root`` for ``multiclass`` and vice
    versa), every ``data.external`` root, then the folders of ``data.<task>.compare_with``;
    each ``{"name": the path as configured, "configured_as": where, "path": resolved}``.
    A folder that is (inside, or holds) this task's root, or repeats an earlier one, is
    not compared. A missing ``data.external`` or ``compare_with`` folder is skipped with a
    note (one line each); the other task's root is compared only when it exists.
    """
    _, own_root = data_root_for(task, data_params)
    own = own_root.resolve()
    other_task = "multiclass" if task == "binary" else "binary"
    _, other_root = data_root_for(other_task, data_params)
    candidates = [(data_params[other_task].get("root") or config.relative_to_project(other_root),
                   f"data.{other_task}.root", other_root, False)]
    candidates += [(entry["root"], f"data.external {entry['name']}", config.resolve(entry["root"]), True)
                   for entry in data_params["external"]]
    candidates += [(folder, f"data.{task}.compare_with", config.resolve(folder), True)
                   for folder in data_params[task]["compare_with"]]
    sources, notes, seen = [], [], set()
    for name, where, path, explicit in candidates:
        if not path.is_dir():
            if explicit:
                notes.append(f"{where}: '{name}' is not a folder; not compared for near-duplicates")
            continue
        resolved = path.resolve()
        if resolved == own or own in resolved.parents or resolved in own.parents:
            if explicit:
                notes.append(f"{where}: '{name}' overlaps this task's data root "
                             f"'{config.relative_to_project(own_root)}'; not compared for near-duplicates")
            continue
        if resolved not in seen:
            seen.add(resolved)
            sources.append({"name": str(name), "configured_as": where, "path": path})
    return sources, notes


def cross_source_duplicates(manifest: pd.DataFrame, phashes, thumbnails, sources: list[dict], *,
                            progress: bool = True) -> tuple[pd.DataFrame, dict, list[str]]:
    """Near-identical images of ``manifest``'s rows in other sources; returns ``(table, report, notes)``.

    ``phashes`` and ``thumbnails`` are the rows' fingerprints (:class:`ScanResult`),
    ``sources`` those of :func:`comparison_sources`. ``table`` has one row per matching
    pair (:data:`CROSS_SOURCE_COLUMNS`); ``report`` maps each source compared to its
    ``configured_as``, ``compared_images`` (its readable images), ``pairs``, ``images``
    (images of the manifest with a match) and ``by_label`` (those per label); ``notes``
    has one warning line per source with matches (or without images). Only a report:
    splits and leakage groups do not depend on other data sets.
    """
    tables, report, notes = [], {}, []
    totals = manifest["label"].value_counts()
    split = manifest["split"].to_numpy() if "split" in manifest.columns else np.full(len(manifest), "")
    for source in sources:
        name, where = source["name"], source["configured_as"]
        other = fingerprint_folder(source["path"], progress=progress)
        pairs = cross_source_pairs(phashes, thumbnails, other.phashes, other.thumbnails)
        a, b = pairs["a"].to_numpy(dtype=int), pairs["b"].to_numpy(dtype=int)
        matched = manifest.iloc[np.unique(a)]
        by_label = {str(k): int(v) for k, v in matched["label"].value_counts().sort_index().items()}
        report[name] = {"configured_as": where, "compared_images": len(other.files), "pairs": len(pairs),
                        "images": len(matched), "by_label": by_label}
        if other.files.empty:
            notes.append(f"{where}: '{name}' has no readable image; not compared for near-duplicates")
        if len(pairs):
            counts = " and ".join(f"{n} of {totals[label]} {label}" for label, n in by_label.items())
            notes.append(f"{counts} images are near-duplicates of images in '{name}' ({where}; {len(pairs)} pairs, "
                         "see cross_source_duplicates.csv): do not train on one and evaluate on the other")
        tables.append(pd.DataFrame({
            "path": manifest["path"].to_numpy()[a], "label": manifest["label"].to_numpy()[a], "split": split[a],
            "other_source": name, "other_path": other.files["path"].to_numpy()[b],
            "other_label": other.files["label"].to_numpy()[b], "hash_bits": pairs["hash_bits"].to_numpy(dtype=int),
            "mean_difference": pairs["mean_difference"].to_numpy(dtype=float).round(3),
        }, columns=CROSS_SOURCE_COLUMNS))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CROSS_SOURCE_COLUMNS)
    return table.sort_values(["other_source", "path", "other_path"]).reset_index(drop=True), report, notes


def label_conflicts(manifest: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Images that show the same picture under different labels (columns :data:`CONFLICT_COLUMNS`).

    Byte-identical files (same ``sha256``) with different labels, and the pairs of
    :func:`near_identical_pairs` (``pairs``, row positions in ``manifest``) whose labels
    differ. Pairs join into groups; every member of a group is listed (with the evidence
    that linked it), also members that share the label, since it cannot be told which
    label is right.
    """
    if len(manifest) < 2:
        return pd.DataFrame(columns=CONFLICT_COLUMNS)
    labels = manifest["label"].to_numpy()
    paths = manifest["path"].to_numpy()
    sha = manifest["sha256"].to_numpy()
    links: dict[int, list[tuple[int, str]]] = {}

    def link(i: int, j: int, evidence: str) -> None:
        links.setdefault(i, []).append((j, evidence))
        links.setdefault(j, []).append((i, evidence))

    for _, rows in manifest.groupby("sha256").indices.items():
        if len(rows) > 1 and len(set(labels[rows])) > 1:
            for j in rows[1:]:
                link(int(rows[0]), int(j), "identical bytes")
    a, b = pairs["a"].to_numpy(dtype=int), pairs["b"].to_numpy(dtype=int)
    cross = (labels[a] != labels[b]) & (sha[a] != sha[b])
    for i, j, difference in zip(a[cross], b[cross], pairs["mean_difference"].to_numpy()[cross]):
        link(int(i), int(j), f"near-identical (mean difference {difference:.2f} of 255)")
    if not links:
        return pd.DataFrame(columns=CONFLICT_COLUMNS)
    group_of: dict[int, int] = {}
    for seed in sorted(links):
        if seed in group_of:
            continue
        group, stack = len(set(group_of.values())) + 1, [seed]
        while stack:
            i = stack.pop()
            if i not in group_of:
                group_of[i] = group
                stack += [j for j, _ in links[i]]
    table = pd.DataFrame([{
        "conflict_group": f"conflict{group_of[i]:04d}",
        "path": paths[i],
        "label": labels[i],
        "patient_id": manifest["patient_id"].iat[i],
        "sha256": sha[i],
        "evidence": "; ".join(f"{evidence} to {paths[j]} ({labels[j]})" for j, evidence in links[i]),
    } for i in sorted(group_of)], columns=CONFLICT_COLUMNS)
    return table.sort_values(["conflict_group", "path"]).reset_index(drop=True)


def _duplicate_groups(sha: pd.Series) -> list[str]:
    counts = sha.value_counts()
    dup_hashes = sorted(counts[counts > 1].index)
    names = {h: f"dup{i:04d}" for i, h in enumerate(dup_hashes, start=1)}
    return [names.get(h, "") for h in sha]


def _near_duplicates(manifest: pd.DataFrame, pairs: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """``near_duplicate_group`` per row and the table of near-duplicate pairs (not byte-identical ones).

    Groups are the connected images of ``pairs`` (row positions in ``manifest``) that
    differ in bytes, named ``near0001`` ... in manifest order; byte-identical copies of a
    member are in its group too (they match the same images).
    """
    sha = manifest["sha256"].to_numpy()
    a, b = pairs["a"].to_numpy(dtype=int), pairs["b"].to_numpy(dtype=int)
    differ = sha[a] != sha[b]
    a, b, pairs = a[differ], b[differ], pairs[differ]
    names = [""] * len(manifest)
    if len(a):
        members = np.unique(np.concatenate([a, b]))
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(manifest), len(manifest)))
        _, component = connected_components(graph, directed=False)
        numbers: dict[int, int] = {}
        for i in members:  # ascending rows: groups numbered by their first image
            names[i] = f"near{numbers.setdefault(component[i], len(numbers) + 1):04d}"
    path, label, patient = (manifest[c].to_numpy() for c in ("path", "label", "patient_id"))
    table = pd.DataFrame({
        "near_duplicate_group": [names[i] for i in a],
        "path_a": path[a], "path_b": path[b],
        "label_a": label[a], "label_b": label[b],
        "patient_a": patient[a], "patient_b": patient[b],
        "hash_bits": pairs["hash_bits"].to_numpy(dtype=int),
        "mean_difference": pairs["mean_difference"].to_numpy(dtype=float).round(3),
        "split_a": "", "split_b": "",
    }, columns=NEAR_DUPLICATE_COLUMNS)
    return names, table.sort_values(["near_duplicate_group", "path_a", "path_b"]).reset_index(drop=True)


# Columns whose shared values tie images into one leakage group ("" ties nothing).
LEAKAGE_KEYS = ("patient_id", "sha256", "near_duplicate_group")


def leakage_groups(manifest: pd.DataFrame) -> np.ndarray:
    """Connected groups of images that must stay together: same patient, identical bytes or near-duplicates.

    Returns an integer group id per row (union-find over the :data:`LEAKAGE_KEYS`
    columns the manifest has; empty values join nothing).
    """
    parent = list(range(len(manifest)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in (c for c in LEAKAGE_KEYS if c in manifest.columns):
        first: dict[str, int] = {}
        for i, key in enumerate(manifest[column].to_numpy()):
            if key == "" or pd.isna(key):
                continue
            if key in first:
                a, b = find(i), find(first[key])
                if a != b:
                    parent[a] = b
            else:
                first[key] = i
    roots = [find(i) for i in range(len(manifest))]
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def leakage_group_names(manifest: pd.DataFrame) -> list[str]:
    """The ``leakage_group`` column: :func:`leakage_groups` as ``g00001`` ..., numbered in manifest order.

    The same manifest (rows in the same order) always gives the same names; evaluation
    code can resample these groups (a patient-clustered bootstrap) from the manifest alone.
    """
    numbers: dict[int, int] = {}
    return [f"g{numbers.setdefault(group, len(numbers) + 1):05d}" for group in leakage_groups(manifest)]


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

    Groups (:func:`leakage_groups`) join images that share a patient id, identical
    bytes or a near-duplicate group, so neither a patient nor a copy of an image can
    sit in two splits. Where ids fell back to file names the split is image-level.
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
    """Count patients, identical files (sha256) and near-duplicate groups that appear in more than one split.

    Rows with split ``excluded`` are ignored. Returns a dict with the counts and
    up to five examples of each: patient ids, and for identical files their paths
    joined by `` = `` (the hash prefix when the manifest has no ``path`` column);
    ``near_duplicates_*`` are reported (0) also for a manifest without that column.
    """
    used = manifest[manifest["split"].isin(SPLITS)]
    report: dict = {"near_duplicates_in_several_splits": 0, "near_duplicates_examples": []}
    if "near_duplicate_group" in used.columns:
        near = used[used["near_duplicate_group"] != ""]
        n_splits = near.groupby("near_duplicate_group")["split"].nunique()
        shared = sorted(n_splits[n_splits > 1].index)
        report["near_duplicates_in_several_splits"] = len(shared)
        report["near_duplicates_examples"] = [str(s) for s in shared[:5]]
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
    """Raise ``ValueError`` if a patient, identical file or near-duplicate group is in two splits; else the report."""
    report = check_leakage(manifest)
    near = report["near_duplicates_in_several_splits"]
    if report["patients_in_several_splits"] or report["identical_files_in_several_splits"] or near:
        near_part = f" and {near} near-duplicate group(s) {report['near_duplicates_examples']}" if near else ""
        raise ValueError(
            "leakage between splits: "
            f"{report['patients_in_several_splits']} patient(s) {report['patients_examples']} and "
            f"{report['identical_files_in_several_splits']} identical file(s) {report['identical_files_examples']}"
            f"{near_part} appear in more than one split. Splits must be made by patient group (assign_splits)."
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


def required_classes(task: str, source: str) -> tuple[str, ...]:
    """Classes every usable data set of ``task`` from ``source`` must contain (empty: any classes)."""
    named = {"kermany": KERMANY_CLASSES, "kermany3": KERMANY3_CLASSES, "covid_radiography": COVID_CLASSES,
             "synthetic": KERMANY_CLASSES if task == "binary" else COVID_CLASSES}
    return named.get(source, ())


def check_classes(scan: ScanResult, task: str) -> None:
    """Fail before any training when the scanned data cannot serve ``task``.

    Raises:
        ValueError: a class folder gave no usable image (naming the folder and why), a
            class the source must have is missing, or a binary task has other than 2 classes.
    """
    unusable = scan.unusable_classes()
    if unusable:
        label, why = next(iter(unusable.items()))
        more = f" (and {len(unusable) - 1} more class(es): {sorted(unusable)[1:]})" if len(unusable) > 1 else ""
        raise ValueError(f"class '{label}' has no usable image: {why}{more}. Every class of the {task} task needs "
                         "images; remove the folder or add images")
    present = sorted(scan.manifest["label"].unique())
    missing = [c for c in required_classes(task, scan.source) if c not in present]
    if missing:
        raise ValueError(f"source {scan.source!r} under '{scan.root}' has no images of class(es) {missing}; "
                         f"found only {present}")
    if task == "binary" and len(present) != 2:
        raise ValueError(f"the binary task needs exactly 2 class folders, found {len(present)}: {present} "
                         f"under '{scan.root}'")
    if len(present) < 2:
        raise ValueError(f"the {task} task needs at least 2 classes, found {present} under '{scan.root}'")


def patient_id_report(manifest: pd.DataFrame) -> tuple[dict, str | None]:
    """Where the patient ids came from and what that makes of the split; returns ``(fields, warning)``.

    ``fields`` are the data report's ``patient_ids_parsed``, ``patient_ids_from_file_names``
    (ids that fell back to the file name, ``file:...``), ``patient_id_source`` (``parsed``,
    ``file name`` or ``mixed``), ``split_level`` (``patient`` when every id is parsed,
    ``image`` when none is, else ``mixed``) and ``patient_id_caveat`` (how Kermany ids are
    read, when there are any; else ``None``). ``warning`` is a one-line message when any id
    fell back to the file name, else ``None``.
    """
    ids = manifest["patient_id"].astype(str)
    fallback = ids.str.startswith(FILE_ID_PREFIX).to_numpy()
    n_file, n = int(fallback.sum()), len(manifest)
    source, level = (("parsed", "patient") if n_file == 0 else ("file name", "image") if n_file == n
                     else ("mixed", "mixed"))
    fields = {
        "patient_ids_parsed": n - n_file,
        "patient_ids_from_file_names": n_file,
        "patient_id_source": source,
        "split_level": level,
        "patient_id_caveat": KERMANY_ID_CAVEAT if ids.str.fullmatch(_KERMANY_ID.pattern).any() else None,
    }
    warning = None
    if n_file:
        example = Path(str(manifest["path"].to_numpy()[np.flatnonzero(fallback)[0]])).name
        warning = (f"no patient ids in the file names of {n_file} of {n} images (e.g. {example}): splits are "
                   "image-level for them, so images of one patient can sit in train and test (only identical and "
                   "near-identical copies are kept together); test figures may be optimistic")
    return fields, warning


def build_manifest(task: str, data_params: dict, seed: int, out_dir: str | Path | None = None,
                   *, progress: bool = True) -> dict:
    """Scan the task's source, check its classes, split it by patient, check leakage and write the results.

    Writes ``manifest.csv`` (with the split), ``quarantine.csv``,
    ``label_conflicts.csv``, ``near_duplicates.csv`` (near-identical pairs under one
    label that are not byte-identical, with their splits), ``cross_source_duplicates.csv``
    (images near-identical to images of the other configured sources,
    :func:`comparison_sources` and :func:`cross_source_duplicates`) and ``summary.json`` to
    ``out_dir`` (default ``data/processed/<task>``). Nothing is written when a check fails.
    Where patient ids fell back to file names, a warning says that the split is
    image-level for those images (also in the summary's ``warnings``); so does each
    other source with near-duplicates, and each configured folder that is missing.

    Args:
        data_params: the validated ``data`` section of params.yaml (every key present).

    Raises:
        ValueError: a class without usable images, leakage, or bad parameters.

    Returns:
        The summary dict (also suitable as DVC metrics).
    """
    source, root = data_root_for(task, data_params)
    out_dir = config.resolve(out_dir) if out_dir else config.PROCESSED_DIR / task
    scan = scan_source(source, root, progress=progress)
    check_classes(scan, task)
    manifest = assign_splits(
        scan.manifest,
        val_fraction=float(data_params["val_fraction"]),
        test_fraction=float(data_params["test_fraction"]),
        seed=int(seed),
        keep_official_test=bool(data_params["keep_official_test"]),
    )
    leakage = assert_no_leakage(manifest)
    used = manifest[manifest["split"].isin(SPLITS)]
    id_fields, id_warning = patient_id_report(used)
    notes = list(scan.warnings)
    if id_warning:
        warnings.warn(id_warning, stacklevel=2)
        notes.append(id_warning)
    sources, source_notes = comparison_sources(task, data_params)
    cross, cross_report, cross_notes = cross_source_duplicates(manifest, scan.phashes, scan.thumbnails, sources,
                                                               progress=progress)
    for note in source_notes + cross_notes:
        warnings.warn(note, stacklevel=2)
        notes.append(note)
    split_of = dict(zip(manifest["path"], manifest["split"]))
    near = scan.near_duplicates.assign(split_a=scan.near_duplicates["path_a"].map(split_of),
                                       split_b=scan.near_duplicates["path_b"].map(split_of))
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_table(manifest, out_dir / "manifest.csv")
    outputs.write_table(scan.quarantine, out_dir / "quarantine.csv")
    outputs.write_table(scan.conflicts, out_dir / "label_conflicts.csv")
    outputs.write_table(near, out_dir / "near_duplicates.csv")
    outputs.write_table(cross, out_dir / "cross_source_duplicates.csv")
    summary = {
        "task": task,
        "source": source,
        "synthetic": source == "synthetic",
        "root": scan.root,
        "classes": sorted(manifest["label"].unique().tolist()),
        "images": int(len(used)),
        "patients": int(used["patient_id"].nunique()),
        "quarantined": int(len(scan.quarantine)),
        "label_conflicts": int(len(scan.conflicts)),
        "nested_images": int(scan.counts["nested_images"]),
        "hidden_skipped": int(scan.counts["hidden_skipped"]),
        "excluded_for_leakage": int((manifest["split"] == "excluded").sum()),
        "duplicate_files": int((manifest["duplicate_group"] != "").sum()),
        "near_duplicate_pairs": int(len(near)),
        "near_duplicate_images": int((manifest["near_duplicate_group"] != "").sum()),
        "near_duplicate_pairs_cross_patient": int((near["patient_a"] != near["patient_b"]).sum()),
        **id_fields,
        "per_split": {s: int((used["split"] == s).sum()) for s in SPLITS},
        "per_class": {k: int(v) for k, v in used["label"].value_counts().sort_index().items()},
        "leakage_patients": leakage["patients_in_several_splits"],
        "leakage_identical_files": leakage["identical_files_in_several_splits"],
        "leakage_near_duplicates": leakage["near_duplicates_in_several_splits"],
        "cross_source_duplicate_images": int(cross["path"].nunique()),
        "cross_source_duplicates": cross_report,
        "warnings": notes,
    }
    outputs.write_json(summary, out_dir / "summary.json")
    return summary


def load_manifest(task: str, processed_dir: str | Path | None = None) -> pd.DataFrame:
    """Read ``data/processed/<task>/manifest.csv`` written by the data stage.

    Raises:
        FileNotFoundError: with the command that creates it.
    """
    path = (config.resolve(processed_dir) if processed_dir else config.PROCESSED_DIR / task) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found; run `dvc repro prepare_{task}` first")
    text = ("patient_id", "sha256", "source_split", "duplicate_group", "near_duplicate_group", "leakage_group")
    return pd.read_csv(path, keep_default_na=False, dtype=dict.fromkeys(text, str))


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


def select_split(manifest: pd.DataFrame, split: str, *, allow_empty: bool = False) -> pd.DataFrame:
    """The rows of one split (``train``, ``val``, ``test`` or ``excluded``), in manifest order, index 0..n-1.

    The one way every module selects a split.

    Raises:
        ValueError: an unknown split name, a manifest without a ``split`` column, or
            (unless ``allow_empty``) a split without images; the message names the splits present.
    """
    if split not in (*SPLITS, "excluded"):
        raise ValueError(f"split must be one of {[*SPLITS, 'excluded']}, got {split!r}")
    if "split" not in manifest.columns:
        raise ValueError("the manifest has no 'split' column; build it with `xraylib prepare <task>`")
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    if rows.empty and not allow_empty:
        raise ValueError(f"the manifest has no images in split {split!r} (splits present: "
                         f"{sorted(manifest['split'].unique().tolist())}); re-run `xraylib prepare`")
    return rows


def sample_per_class(manifest: pd.DataFrame, n: int, seed: int = 0, split: str | None = None) -> pd.DataFrame:
    """Up to ``n`` random rows per class (optionally from one split), reproducible from ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    frame = manifest if split is None else select_split(manifest, split)
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
