"""The nbval sanitizers mask run-to-run noise (timings, rates, addresses, paths) and nothing else."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

CFG = Path(__file__).resolve().parents[1] / "nbval_sanitize.cfg"

# What each sanitizer must mask: (output text, text after that sanitizer alone).
MASKED = {
    "keras_epoch_times": [
        ("4/4 - 2s - 427ms/step - accuracy: 0.5000", "4/4 - TIME - 427ms/step - accuracy: 0.5000"),
        ("12/12 - 13s - 1s/step - loss: 0.69", "12/12 - TIME - 1s/step - loss: 0.69"),
    ],
    "keras_step_times": [
        ("4/4 - 2s - 427ms/step - accuracy: 0.5000", "4/4 - 2s - TIME/step - accuracy: 0.5000"),
        ("1/1 - 0s - 95us/step", "1/1 - 0s - TIME/step"),
        ("3/3 - 4s - 2s/epoch", "3/3 - 4s - TIME/epoch"),
    ],
    "keras_progress_times": [
        ("4/4 ━━━━ \x1b[1m2s\x1b[0m 427ms/step", "4/4 ━━━━ \x1b[1mTIME\x1b[0m 427ms/step"),
        ("1/9 ━ \x1b[1m1:02\x1b[0m 8s/step", "1/9 ━ \x1b[1mTIME\x1b[0m 8s/step"),
    ],
    "tqdm_elapsed": [
        ("scan: 100%|##########| 10/10 [00:03<00:05, 2.10it/s]", "scan: 100%|##########| 10/10 [ELAPSED, 2.10it/s]"),
        ("scan:   0%|          | 0/10 [00:00<?, ?it/s]", "scan:   0%|          | 0/10 [ELAPSED, ?it/s]"),
        ("train: 5/5 [1:02:03<00:01, 1.50s/it, loss=0.3]", "train: 5/5 [ELAPSED, 1.50s/it, loss=0.3]"),
        ("files: 37 [00:04, 8.31it/s]", "files: 37 [ELAPSED, 8.31it/s]"),
    ],
    "tqdm_rates": [
        ("10/10 [00:03<00:05, 2.10it/s]", "10/10 [00:03<00:05, RATE]"),
        ("0/10 [00:00<?, ?it/s]", "0/10 [00:00<?, RATE]"),
        ("5/5 [00:07<00:01, 1.50s/it, loss=0.3]", "5/5 [00:07<00:01, RATE, loss=0.3]"),
        ("900/900 [00:01<00:00, 1.2kit/s]", "900/900 [00:01<00:00, RATE]"),
    ],
    "memory_addresses": [
        ("<Figure object at 0x7f3a2c1d9e50>", "<Figure object at ADDRESS>"),
        ("calls to <function extract.<locals>.<lambda> at 0x7effbe579440> triggered tf.function retracing",
         "calls to <function extract.<locals>.<lambda> at ADDRESS> triggered tf.function retracing"),
    ],
    "project_paths": [
        ("wrote /home/ci/work/main/reports/figures/roc.png", "wrote PROJECT/reports/figures/roc.png"),
        ("read /tmp/pytest-1/data/processed/manifest.csv", "read PROJECT/data/processed/manifest.csv"),
    ],
}

# Results, not noise: no sanitizer may change these.
KEPT = [
    "3725:745:746",
    "train/val/test = 3725:745:746 images",
    "12:30 split",
    "0.947",
    "epoch 3/20",
    "train     epoch  3/20  loss 0.172  auc 0.904  accuracy 0.809 | val_loss 0.220",
    "densenet121          epoch   1/3: loss 1.2881 acc 0.3975 | lr 1e-04  *best",
    "lesion 5s 2ms",  # plain words with units, outside Keras' progress lines
    "mask 0x10 and 0xff",
    "data/processed/binary/manifest.csv",
    "relative reports/figures/roc.png",
    "IM-0115-0001.jpeg, person1_virus_6.jpeg",
]


def _patterns() -> dict[str, tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CFG, encoding="utf-8")
    return {name: (parser[name]["regex"], parser[name]["replace"]) for name in parser.sections()}


def _sanitize_all(text: str) -> str:
    """What nbval does: every pattern in file order, ``re.sub`` each."""
    for regex, replace in _patterns().values():
        text = re.sub(regex, replace, text)
    return text


def test_every_sanitizer_is_tested_and_nbval_reads_the_same_patterns():
    from nbval.plugin import get_sanitize_patterns

    patterns = _patterns()
    assert set(patterns) == set(MASKED), "add examples for a new sanitizer to MASKED"
    assert get_sanitize_patterns(CFG.read_text(encoding="utf-8")) == list(patterns.values())


@pytest.mark.parametrize("name, text, expected", [(n, t, e) for n, pairs in MASKED.items() for t, e in pairs])
def test_sanitizer_masks_its_examples(name, text, expected):
    regex, replace = _patterns()[name]
    assert re.sub(regex, replace, text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_results_are_left_untouched(text):
    for name, (regex, replace) in _patterns().items():
        assert re.sub(regex, replace, text) == text, f"{name} rewrote {text!r}"


def test_whole_lines_become_run_independent():
    keras_a = "4/4 - 2s - 427ms/step - accuracy: 0.5000 - loss: 0.6931"
    keras_b = "4/4 - 3s - 611ms/step - accuracy: 0.5000 - loss: 0.6931"
    expected = "4/4 - TIME - TIME/step - accuracy: 0.5000 - loss: 0.6931"
    assert _sanitize_all(keras_a) == _sanitize_all(keras_b) == expected
    tqdm_a = "scan: 100%|##########| 10/10 [00:03<00:00, 2.95it/s]"
    tqdm_b = "scan: 100%|##########| 10/10 [00:01<00:00, 7.12it/s]"
    assert _sanitize_all(tqdm_a) == _sanitize_all(tqdm_b) == "scan: 100%|##########| 10/10 [ELAPSED, RATE]"
    assert _sanitize_all(keras_a.replace("0.5000", "0.7500")) != _sanitize_all(keras_a)  # results still compared


def _compared_outputs():
    """Every stored output text of every notebook cell nbval compares (cells without ``nbval-ignore-output``)."""
    import nbformat

    for path in sorted((CFG.parents[1] / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code" or "nbval-ignore-output" in cell.metadata.get("tags", []):
                continue
            for output in cell.get("outputs", []):
                texts = [output.get("text", "")] + [str(v) for v in output.get("data", {}).values()]
                yield f"{path.name} cell {index}", "".join(texts)


def test_compared_notebook_outputs_hold_no_machine_specific_path():
    """A stored output nbval compares must read the same in any clone: no absolute path survives the sanitizers
    (a warning's ``/home/me/clone/.venv/lib/.../site-packages/x.py:21`` line differs on every machine)."""
    root = str(CFG.parents[1])
    machine_specific = re.compile(r"site-packages/|dist-packages/|" + re.escape(root))
    offenders = [where for where, text in _compared_outputs() if machine_specific.search(_sanitize_all(text))]
    assert not offenders, f"compared outputs with a machine-specific path: {offenders}"
