"""Multi-device Keras (:mod:`xraylib.tf_distribute`): the binary model trained under ``MirroredStrategy`` on two
logical CPU devices.

TensorFlow fixes its device layout at its first operation, and this test process has long started TensorFlow, so the
training runs in a fresh interpreter (:func:`_child`): it splits the CPU into two logical devices and trains the small
CNN on a tiny synthetic set mirrored over both and on one device, with the same global batch (8) and seed and no
augmentation, then a pretrained Xception (cached features: one device; on images: mirrored, fine-tuned). The tests
read what it wrote (``result.json``) and printed.

Keras builds a model trained under a strategy from one batch of the training set, read with an iterator of its own:
the training set is reshuffled at every iteration, so the mirrored run's epochs get the reshuffles 2, 3, ... where a
one-device run gets 1, 2, ... The one-device references here read one batch first (``reshuffled=True``) to see the
same orders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tf.helpers import train_config
from xraylib import tf_distribute
from xraylib.tf_runtime import tf

ROOT = Path(__file__).resolve().parents[2]
BATCH = 8
# Measured (2-core AMD EPYC, 2 logical CPUs): with GroupNorm instead of BatchNorm and no dropout nothing but the
# order of floating-point sums separates the two runs: history 6.0e-8, validation probabilities 8.9e-8, weights
# 2.8e-7 (tolerances 10-20x). With the study's BatchNorm each replica normalises over its own 4 images: training
# loss 0.021, val_loss 0.017, validation probabilities 0.0028, weights 0.024 after 3 epochs (tolerances 4-5x).
EXACT = {"history": 1e-6, "val_probs": 1e-6, "weights": 3e-6}
BATCHNORM = {"loss": 0.08, "val_loss": 0.08, "val_probs": 0.012}


def _summary(result) -> dict:
    """History, validation probabilities, how many variables are mirrored and how far their copies differ."""
    optimizer = getattr(result.model, "optimizer", None)  # None: the cached path compiles only parts of the model
    variables = result.model.weights + (optimizer.variables if optimizer is not None else [])
    mirrored = [v for v in variables if isinstance(v.value, tf.distribute.DistributedValues)]
    spread = max((float(np.abs(np.asarray(part) - np.asarray(v.value.values[0])).max())
                  for v in mirrored for part in v.value.values), default=0.0)
    return {"history": result.history.drop(columns=["phase"]).to_dict("list"),
            "phases": result.history["phase"].tolist(), "val_probs": np.asarray(result.val_probs).tolist(),
            "mirrored_variables": f"{len(mirrored)}/{len(variables)}", "replica_spread": spread,
            "trainable_from": result.info["trainable_from"], "replicas": result.info["replicas"]}


def _child(folder: str) -> None:
    """Runs in a fresh interpreter (see the module docstring); writes ``result.json`` to ``folder``."""
    cpus = tf_distribute.split_cpu(2)  # first: before TensorFlow's first operation
    import keras

    from xraylib import data, synthetic, tf_data, tf_model, tf_train

    folder = Path(folder)
    synthetic.generate(folder, "binary", n_patients={"NORMAL": 24, "PNEUMONIA": 24}, images_per_patient=1,
                       image_size=32, difficulty=0.0, seed=3)
    manifest = data.assign_splits(data.scan_source("folder", folder / "chest_xray", progress=False).manifest,
                                  val_fraction=0.25, test_fraction=0.2, seed=0)  # 27 train, 9 val images
    names = data.class_names(manifest)
    train_rows = manifest.index[manifest["split"] == "train"]
    mirrored = tf_distribute.strategy(cpus)
    out = {"cpus": cpus, "replicas": tf_distribute.replicas(mirrored),
           "default_replicas": tf_distribute.replicas(tf_distribute.strategy())}

    def run(strategy, frame, *, reshuffled=False, log_csv=None, **overrides):
        settings = dict(image_size=32, epochs=3, batch_size=BATCH, seed=7, augment_flip="none", augment_rotation=0.0,
                        augment_zoom=0.0)
        cfg = train_config(**{**settings, **overrides})
        tf_train.set_determinism(cfg.seed)
        datasets = tf_data.split_datasets(frame, names, image_size=cfg.image_size, resize_mode="stretch",
                                          equalize_method="none", batch_size=BATCH, seed=cfg.seed,
                                          splits=("train", "val"))
        if reshuffled:  # as Keras reads one batch under a strategy (module docstring)
            next(iter(datasets["train"]["dataset"]))
        return tf_train.train_binary(cfg, datasets, strategy=strategy, log_csv=log_csv), datasets

    def weight_gap(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a.model.get_weights(), b.model.get_weights()))

    even = manifest.drop(index=train_rows[:3])  # 24 training images: 3 full batches
    tf_model.SMALL_CNN_NORM = "group"  # no batch statistics: the two runs should differ only by rounding
    group_m, _ = run(mirrored, even, dropout=0.0, log_csv=folder / "log.csv")
    group_s, datasets = run(None, even, dropout=0.0, reshuffled=True)  # None: no GPUs -> one device
    tf_model.SMALL_CNN_NORM = "batch"
    out["group"] = {"mirrored": _summary(group_m), "single": _summary(group_s), "weights": weight_gap(group_m, group_s)}

    def metrics():  # those of tf_train's compile
        return [keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")]

    validation = tf_distribute.OneDeviceValidation(datasets["val"]["dataset"], metrics)
    validation.set_model(group_s.model)
    out["validation"] = {"callback": validation.evaluate(),
                         "keras": group_s.model.evaluate(datasets["val"]["dataset"], return_dict=True, verbose=0)}
    path = tf_model.save_model(group_m.model, folder / "model" / "model.keras",
                               {"class_names": names, "threshold": 0.5})
    reloaded, _ = tf_model.load_model(path)
    out["reloaded_gap"] = float(np.abs(tf_model.predict_proba(reloaded, datasets["val"]["dataset"])
                                       - group_m.val_probs).max())

    batch_m, _ = run(mirrored, even, dropout=0.0)
    batch_s, _ = run(None, even, dropout=0.0, reshuffled=True)
    out["batch"] = {"mirrored": _summary(batch_m), "single": _summary(batch_s), "weights": weight_gap(batch_m, batch_s)}

    one_left = manifest.drop(index=train_rows[:2])  # 25 training images: the last batch (1 image) is dropped
    dropped, datasets = run(mirrored, one_left, epochs=2)
    out["dropped"] = {**_summary(dropped), "batches": [int(y.shape[0]) for _, y in tf_distribute.training_batches(
        datasets["train"]["dataset"], len(datasets["train"]["labels"]), BATCH, 2)]}

    # A pretrained backbone (random weights saved as a local weights file): 11 training images (the last batch of 3
    # is cut to 2), 9 validation images (a last batch of 1, which a distributed evaluation could not split).
    both_classes = manifest.loc[train_rows].groupby("label").head(6).index[:11]
    small = manifest[(manifest["split"] == "val") | manifest.index.isin(both_classes)]
    weights = folder / "xception_notop.weights.h5"
    keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3)).save_weights(weights)
    xception = dict(backbone="xception", weights=str(weights), image_size=71, epochs=1, fine_tune_epochs=1, seed=1)
    cached, _ = run(mirrored, small, cache_features=True, **xception)
    out["cached"] = _summary(cached)
    on_images, datasets = run(mirrored, small, cache_features=False, **xception)
    out["on_images"] = {**_summary(on_images), "batches": [int(y.shape[0]) for _, y in tf_distribute.training_batches(
        datasets["train"]["dataset"], len(datasets["train"]["labels"]), BATCH, 2)]}
    (folder / "result.json").write_text(json.dumps(out))


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirrored")
    code = "import sys; from tests.tf.test_tf_distribute import _child; _child(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((folder / "result.json").read_text()), done.stdout, folder


def _gap(a: dict, b: dict, key: str) -> float:
    return float(np.abs(np.asarray(a["history"][key]) - np.asarray(b["history"][key])).max())


def test_two_logical_cpus_train_two_mirrored_replicas(mirrored_runs):
    out, stdout, _ = mirrored_runs
    assert len(out["cpus"]) == 2 and out["replicas"] == 2 and out["default_replicas"] == 1
    assert stdout.count("training on 2 replicas (MirroredStrategy), global batch 8 (4 per replica); validation on "
                        "one device") == 4
    mirrored = out["batch"]["mirrored"]
    total = int(mirrored["mirrored_variables"].split("/")[1])
    assert mirrored["mirrored_variables"] == f"{total}/{total}"  # model and optimizer
    assert mirrored["replica_spread"] == 0.0  # every replica holds the same values, the restored best included
    assert out["batch"]["single"]["mirrored_variables"].startswith("0/")
    # model.json records how many copies trained the model; the cached-feature path trains on one device
    assert (mirrored["replicas"], out["batch"]["single"]["replicas"], out["cached"]["replicas"],
            out["on_images"]["replicas"]) == (2, 1, 1, 2)
    from xraylib import tf_train  # here: the module's child process must split the CPU before TensorFlow starts

    cfg = train_config(image_size=32)
    meta = tf_train.model_metadata(cfg, ["NORMAL", "PNEUMONIA"], 0.5, resize_mode="stretch", equalize_method="none",
                                   replicas=mirrored["replicas"])
    assert meta["replicas"] == 2


def test_mirrored_training_learns_and_validates_every_epoch(mirrored_runs):
    out, stdout, folder = mirrored_runs
    history = out["batch"]["mirrored"]["history"]
    assert {"loss", "auc", "accuracy", "val_loss", "val_auc", "val_accuracy", "learning_rate"} <= set(history)
    assert all(np.isfinite(history[key]).all() for key in history)
    assert history["loss"][-1] < history["loss"][0], f"the mirrored run's training loss did not fall: {history}"
    assert "| val_loss " in stdout  # the epoch line shows the one-device validation
    log = (folder / "log.csv").read_text().splitlines()
    assert "val_loss" in log[0].split(",") and len(log) == 1 + 3


def test_mirrored_run_equals_the_one_device_run_without_batch_statistics(mirrored_runs):
    """GroupNorm, no dropout, no augmentation, the same global batch, seed and orders: the replicas' summed gradient
    of two equal halves is the one-device gradient of the whole batch, up to the order of floating-point sums."""
    out, _, _ = mirrored_runs
    mirrored, single = out["group"]["mirrored"], out["group"]["single"]
    gaps = {key: _gap(mirrored, single, key) for key in ("loss", "auc", "val_loss", "val_auc", "val_accuracy")}
    gaps["val_probs"] = float(np.abs(np.subtract(mirrored["val_probs"], single["val_probs"])).max())
    gaps["weights"] = out["group"]["weights"]
    print(f"mirrored - one device, GroupNorm (max |difference|): {gaps}")
    assert max(gaps[key] for key in ("loss", "auc", "val_loss", "val_auc", "val_accuracy")) <= EXACT["history"], gaps
    assert gaps["val_probs"] <= EXACT["val_probs"] and gaps["weights"] <= EXACT["weights"], gaps


def test_mirrored_run_is_close_to_the_one_device_run_with_batchnorm(mirrored_runs):
    out, _, _ = mirrored_runs
    mirrored, single = out["batch"]["mirrored"], out["batch"]["single"]
    gaps = {"loss": _gap(mirrored, single, "loss"), "val_loss": _gap(mirrored, single, "val_loss"),
            "val_probs": float(np.abs(np.subtract(mirrored["val_probs"], single["val_probs"])).max())}
    print(f"mirrored - one device, BatchNorm (max |difference|): {gaps}; weights {out['batch']['weights']:.3g}")
    assert all(gaps[key] <= BATCHNORM[key] for key in gaps), gaps


def test_one_device_validation_is_what_keras_evaluate_reports(mirrored_runs):
    out, _, _ = mirrored_runs
    callback, keras_values = out["validation"]["callback"], out["validation"]["keras"]
    assert list(callback) == sorted(keras_values) == ["accuracy", "auc", "loss"]
    for name, value in keras_values.items():
        assert callback[name] == pytest.approx(value, abs=1e-6), name


def test_uneven_last_batches_are_cut_to_equal_shares(mirrored_runs):
    out, _, _ = mirrored_runs
    assert out["dropped"]["batches"] == [8, 8, 8]  # 25 images: the last (1 image) would leave a replica empty
    assert out["on_images"]["batches"] == [8, 2]  # 11 images: the last 3 cut to 2
    for run in (out["dropped"], out["on_images"]):
        assert all(np.isfinite(values).all() for values in run["history"].values())
        assert {"val_loss", "val_auc", "val_accuracy"} <= set(run["history"])


def test_pretrained_backbone_on_images_trains_mirrored_and_fine_tunes(mirrored_runs):
    out, _, _ = mirrored_runs
    run = out["on_images"]
    assert run["phases"] == ["head", "fine_tune"] and run["trainable_from"] == "block14_sepconv1"
    total = int(run["mirrored_variables"].split("/")[1])
    assert run["mirrored_variables"] == f"{total}/{total}" and run["replica_spread"] == 0.0


def test_cached_feature_path_stays_on_one_device(mirrored_runs):
    out, stdout, _ = mirrored_runs
    assert "cached-feature training runs on one device (2 replica(s) available)" in stdout
    assert out["cached"]["mirrored_variables"].startswith("0/")
    assert out["cached"]["phases"] == ["head", "fine_tune"]


def test_saved_mirrored_model_reloads_on_one_device(mirrored_runs):
    out, _, _ = mirrored_runs
    assert out["reloaded_gap"] == 0.0


# In this process (no second device needed).

def _numbered(count: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((np.zeros((count, 2), "float32"), np.arange(count, dtype="float32")))


@pytest.mark.parametrize("count, sizes", [(24, [8, 8, 8]), (27, [8, 8, 8, 2]), (25, [8, 8, 8]), (6, [6]), (3, [2])])
def test_training_batches_give_every_replica_an_equal_share(count, sizes):
    batches = tf_distribute.training_batches(_numbered(count).batch(BATCH), count, BATCH, 2)
    labels = [y.numpy() for _, y in batches]
    assert [len(y) for y in labels] == sizes
    assert all(len(x) == len(y) for x, y in batches)
    np.testing.assert_array_equal(np.concatenate(labels), np.arange(sum(sizes)))  # order kept, only the tail cut
    assert int(batches.cardinality()) == len(sizes)  # Keras knows the steps per epoch


def test_training_batches_of_unknown_length_are_formed_here():
    unknown = _numbered(27).filter(lambda x, y: True).batch(4)
    assert [len(y) for _, y in tf_distribute.training_batches(unknown, 27, BATCH, 2)] == [8, 8, 8, 2]


def test_training_batches_check_their_arguments():
    with pytest.raises(ValueError, match=r"batch_size \(9\) must be a multiple of the number of replicas \(2\)"):
        tf_distribute.training_batches(_numbered(27).batch(9), 27, 9, 2)
    with pytest.raises(ValueError, match="1 training image"):
        tf_distribute.training_batches(_numbered(1).batch(BATCH), 1, BATCH, 2)
    with pytest.raises(ValueError, match="has 7 batches of 27 images; build it with batch_size=8"):
        tf_distribute.training_batches(_numbered(27).batch(4), 27, BATCH, 2)


def test_strategy_choice_and_checks():
    if len(tf.config.list_logical_devices("GPU")) < 2:  # one device: the default strategy, today's training
        assert tf_distribute.replicas(tf_distribute.strategy()) == 1
        assert not tf_distribute.is_mirrored(tf_distribute.strategy())
    with pytest.raises(ValueError, match="at least one device"):
        tf_distribute.strategy([])
    with pytest.raises(ValueError, match="each device may appear once"):
        tf_distribute.strategy(["/cpu:0", "/cpu:0"])
    with pytest.raises(ValueError, match="at least one CPU device"):
        tf_distribute.split_cpu(0)
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    with pytest.raises(ValueError, match="supports tf.distribute.MirroredStrategy or the default strategy"):
        tf_distribute.is_mirrored(one)
    with one.scope(), pytest.raises(ValueError, match="outside strategy.scope"):
        tf_distribute.OneDeviceValidation(_numbered(4).batch(2), list)


def test_train_binary_refuses_other_strategies():
    from xraylib import tf_train

    cfg = train_config(image_size=32, epochs=1, batch_size=BATCH, seed=0)
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    with pytest.raises(ValueError, match="supports tf.distribute.MirroredStrategy"):
        tf_train.train_binary(cfg, {}, strategy=one)
    with one.scope(), pytest.raises(ValueError, match=r"outside strategy.scope\(\) and pass the strategy"):
        tf_train.train_binary(cfg, {})
