"""How far apart different pictures are under the near-identical rule of xraylib.data.label_conflicts.

For each data root, every pair of usable images whose perceptual hashes are at most
``data.NEAR_IDENTICAL_HASH_BITS`` apart (the rule's candidates) is compared on its 64x64
thumbnails (mean absolute grey-level difference, of 255). Printed per root: the number of
candidate pairs, the smallest difference between pairs under **different** labels (must
stay above ``data.NEAR_IDENTICAL_MEAN_DIFFERENCE`` for the rule to leave real data alone),
and how many same-label pairs are at most that threshold apart (true duplicates).

Usage::

    python benchmarks/near_identical.py folder:../shared/data/kermany224/train \\
        kermany:data/raw/synthetic/chest_xray covid_radiography:data/raw/synthetic/COVID-19_Radiography_Dataset
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from xraylib import config, data, images


def separation(source: str, root: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = data.scan_source(source, root, progress=False).manifest
    prints = [images.inspect_image(config.resolve(p), fingerprint=True) for p in manifest["path"]]
    words = np.packbits(np.array([p["phash"] for p in prints], dtype=bool), axis=1).view(np.uint64).ravel()
    thumbs = np.array([p["thumbnail"] for p in prints], dtype=np.int16).reshape(len(prints), -1)
    labels = manifest["label"].to_numpy()
    cross, same = [], []
    for i in range(len(words)):
        near = np.flatnonzero(np.bitwise_count(words[i] ^ words[i + 1:]) <= data.NEAR_IDENTICAL_HASH_BITS) + i + 1
        for j in near:
            difference = float(np.abs(thumbs[i] - thumbs[j]).mean())
            (cross if labels[i] != labels[j] else same).append(difference)
    limit = data.NEAR_IDENTICAL_MEAN_DIFFERENCE
    return {"root": root, "images": len(manifest), "candidate_pairs": len(cross) + len(same),
            "min_cross_label_difference": round(min(cross), 2) if cross else None,
            "same_label_pairs_within_limit": sum(d <= limit for d in same)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", metavar="SOURCE:ROOT")
    for spec in parser.parse_args().roots:
        source, root = spec.split(":", 1)
        print(separation(source, root))


if __name__ == "__main__":
    main()
