"""Data-parallel training of the binary Keras model on several devices: ``tf.distribute.MirroredStrategy``.

Under a mirrored strategy every model and optimizer variable has one copy per device (replica); ``fit`` splits each
batch the input pipeline yields over the replicas, runs them in parallel and sums their gradients (Keras scales each
replica's loss by ``1 / replicas``), so every copy takes the same step. The batch of the pipeline is the **global**
batch, ``train_binary.batch_size``: the learning rate and the steps per epoch stay those of the one-device run, and
each of N replicas sees ``batch_size / N`` images. BatchNorm takes its batch statistics per replica (Keras does not
synchronise them), so a mirrored run matches the one-device run closely, not bit for bit.

How :func:`xraylib.tf_train.train_binary` uses it:

* :func:`strategy` picks the devices: every visible GPU when there are two or more, else none, and training runs
  exactly as it did without this module (same code path, same numbers).
* The model is built and compiled inside ``strategy.scope()`` (its variables and the optimizer's are mirrored);
  ``fit`` runs outside the scope (the model keeps its strategy), so callbacks run ordinary one-device code.
* Validation does not go through ``fit(validation_data=...)``: Keras 3 evaluates that distributed, and validation
  batches that do not split evenly over the replicas fail there (an eager ``AddN`` shape mismatch: Keras averages
  the replicas' shares of a batch element by element to build the model, keras-team/keras#19246; a replica with an
  empty share fails in BatchNorm). :class:`OneDeviceValidation` instead runs the model over the validation set at
  the end of every epoch, in inference mode, on the variables' first copy (all copies are equal after each step)
  and writes ``val_loss`` and ``val_<metric>`` into the epoch's logs, the values ``evaluate`` gives on one device;
  it is the first callback, so early stopping, the learning-rate schedule, the checkpoint, the epoch line, the CSV
  log and the history all read them as before. Every validation image counts once, in any batch size.
* Training batches: ``batch_size`` must be a multiple of the replica count, and :func:`training_batches` cuts the
  last, smaller batch of an epoch to a multiple of it (or drops it when it has fewer images than replicas), so every
  replica gets an equal share in every step: then the replicas' summed gradient is that of the whole batch (but for
  BatchNorm), and Keras, which builds the model from the first batch by averaging the replicas' shares element by
  element, does not fail on shares of different sizes (keras-team/keras#19246). At most ``replicas - 1`` images
  of an epoch are left out, different ones every epoch (the order is reshuffled).
* That model build reads one batch of the training set, with an iterator of its own, at the start of every ``fit``
  under a strategy. The training set is reshuffled at every iteration, so the epochs of a mirrored run see the
  reshuffles 2, 3, ... where a one-device run sees 1, 2, ...: orders just as random, not the same ones (the
  equivalence test reads one batch of its one-device reference's training set first).
* The cached-feature path (pretrained backbone, ``cache_features: true``) stays on one device: it trains only the
  small top on activations held in memory (``train_binary`` says so when replicas were available).

:func:`split_cpu` makes several logical CPU devices out of the one CPU; tests use it to run the mirrored path without
GPUs. This module imports TensorFlow (through :mod:`xraylib.tf_runtime`), never torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from xraylib.tf_runtime import tf  # noqa: I001  (first: TensorFlow imported quietly, before keras)
import keras


def split_cpu(count: int) -> list[str]:
    """Split the CPU into ``count`` logical devices; call before TensorFlow runs its first operation.

    Args:
        count: number of logical CPU devices (1 or more).

    Returns:
        The logical device names (``/device:CPU:0``, ``/device:CPU:1``, ...).

    Raises:
        ValueError: ``count`` below 1.
        RuntimeError: TensorFlow is already initialised (its device layout cannot change any more).
    """
    if int(count) != count or count < 1:
        raise ValueError(f"need an integer count of at least one CPU device, got {count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(count))
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def strategy(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The strategy to train the binary model under.

    Args:
        devices: device names to mirror over (``["/cpu:0", "/cpu:1"]``, ``["/gpu:0", "/gpu:1"]``); ``None`` takes
            every visible GPU when there are two or more, else TensorFlow's default one-device strategy.

    Returns:
        A ``tf.distribute.MirroredStrategy``, or the default strategy (``tf.distribute.get_strategy()`` outside any
        scope), under which :func:`xraylib.tf_train.train_binary` trains exactly as without this module.

    Raises:
        ValueError: an empty or repeated device list.
    """
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < 2:
            return tf.distribute.get_strategy()
        devices = [device.name for device in gpus]
    devices = list(devices)
    if not devices:
        raise ValueError("a mirrored strategy needs at least one device, got an empty list")
    if len(set(devices)) != len(devices):
        raise ValueError(f"each device may appear once, got {devices}")
    return tf.distribute.MirroredStrategy(devices=devices)


def replicas(current: tf.distribute.Strategy) -> int:
    """How many copies of the model train in parallel under ``current``."""
    return int(current.num_replicas_in_sync)


def is_mirrored(current: tf.distribute.Strategy) -> bool:
    """Whether ``current`` is a ``MirroredStrategy`` (``True``) or the default one-device strategy (``False``).

    Raises:
        ValueError: any other strategy (TPU, multi-worker, parameter server, one-device):
            :func:`xraylib.tf_train.train_binary` supports only these two.
    """
    if isinstance(current, tf.distribute.MirroredStrategy):
        return True
    if not tf.distribute.has_strategy() and current is tf.distribute.get_strategy():
        return False
    raise ValueError(f"train_binary supports tf.distribute.MirroredStrategy or the default strategy (called outside "
                     f"any strategy scope), got {type(current).__name__}")


def scope(current: tf.distribute.Strategy | None):
    """``current.scope()``, or a context that does nothing for ``None`` (one device)."""
    return contextlib.nullcontext() if current is None else current.scope()


def training_batches(dataset: tf.data.Dataset, count: int, batch_size: int, replicas_: int) -> tf.data.Dataset:
    """The training batches of ``dataset`` (``count`` images) for ``replicas_`` replicas: equal shares only.

    ``dataset`` must come in batches of ``batch_size`` images (the global batch; one of unknown length is re-batched
    to it). The last, smaller batch is cut to a multiple of ``replicas_`` images (at most ``replicas_ - 1`` images
    of an epoch left out; the order is reshuffled every epoch, so not always the same ones), or dropped when that
    leaves nothing. So every replica gets the same number of images in every step, and the sum of the replicas' loss
    means over ``replicas_`` is the global batch's mean (the one-device loss).
    Keras needs it too: it averages the replicas' shares of the first batch element by element to build the model
    (keras-team/keras#19246: ``AddN`` fails on shares of different size), and a replica without images fails.

    Args:
        dataset: batched ``(image, label)`` training dataset (any nest of tensors with the batch first).
        count: images in ``dataset``.
        batch_size: global batch, ``train_binary.batch_size``.
        replicas_: number of replicas.

    Raises:
        ValueError: ``batch_size`` not a multiple of ``replicas_``, fewer than ``replicas_`` images, or a dataset
            whose number of batches shows another batch size.
    """
    batch_size, replicas_ = int(batch_size), int(replicas_)
    if replicas_ < 1:
        raise ValueError(f"need at least one replica, got {replicas_}")
    if batch_size % replicas_:
        raise ValueError(f"train_binary.batch_size ({batch_size}) must be a multiple of the number of replicas "
                         f"({replicas_}): it is the global batch, split evenly over the replicas")
    if count < replicas_:
        raise ValueError(f"{count} training image(s) cannot be split over {replicas_} replicas")
    full, rest = divmod(int(count), batch_size)
    batches = int(dataset.cardinality())
    if batches >= 0 and batches != full + (rest > 0):
        raise ValueError(f"the training dataset has {batches} batches of {count} images; build it with "
                         f"batch_size={batch_size} (train_binary.batch_size, the global batch)")
    if batches < 0:  # length unknown: form the global batches here
        dataset = dataset.rebatch(batch_size)
    if 0 < rest < replicas_:
        return dataset.take(full)  # the last batch would leave a replica without images
    if rest % replicas_ == 0:
        return dataset

    def equal_shares(*batch):
        keep = tf.shape(tf.nest.flatten(batch)[0])[0] // replicas_ * replicas_
        batch = tf.nest.map_structure(lambda t: t[:keep], batch)
        return batch if len(batch) > 1 else batch[0]

    return dataset.map(equal_shares)


class OneDeviceValidation(keras.callbacks.Callback):
    """Validation on one device at the end of every epoch, written into the logs as ``val_loss``, ``val_<metric>``.

    Replaces ``fit(validation_data=...)`` for a model trained under a mirrored strategy (see the module docstring):
    per batch the model runs in inference mode outside any replica context, ``model.compute_loss`` gives the loss
    (compiled loss plus the layers' regularisation losses, as ``evaluate`` reports it) and the metrics are updated;
    the loss is averaged over batches weighted by their size, as Keras does. Put it FIRST in the callbacks list so
    that the callbacks after it (early stopping, checkpoint, CSV log, history) see the validation values.

    Args:
        dataset: batched validation data, ``(x, y)`` or ``(x, y, sample_weight)`` per batch.
        metrics: builds fresh metric objects, the same kinds and names as the ones given to ``compile``.

    Raises:
        ValueError: created inside a strategy scope (its metric variables must be plain one-device variables).
    """

    def __init__(self, dataset: tf.data.Dataset, metrics: Callable[[], list[keras.metrics.Metric]]):
        super().__init__()
        if tf.distribute.has_strategy():
            raise ValueError("create OneDeviceValidation outside strategy.scope(): its metrics must live on one "
                             "device")
        self.dataset = dataset
        self._tracked = [keras.metrics.Mean(name="loss"), *metrics()]
        self._forward = None

    def set_model(self, model):
        super().set_model(model)
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            raise ValueError("OneDeviceValidation needs the epoch's logs dictionary to write into")
        logs.update({f"val_{name}": value for name, value in self.evaluate().items()})

    def evaluate(self) -> dict[str, float]:
        """``{"accuracy": ..., "auc": ..., "loss": ...}`` (sorted by name, as Keras orders them) of the model now.

        Raises:
            RuntimeError: called inside a strategy scope, where Keras would divide the loss by the replica count.
        """
        if tf.distribute.has_strategy():
            raise RuntimeError("OneDeviceValidation runs outside strategy.scope(): call fit outside the scope (the "
                               "model keeps its strategy)")
        loss, *metrics = self._tracked
        for metric in self._tracked:
            metric.reset_state()
        for batch in self.dataset:
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            y_pred = self._forward(x)
            value = self.model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
            loss.update_state(value, sample_weight=tf.shape(x)[0])
            for metric in metrics:
                metric.update_state(y, y_pred, sample_weight=sample_weight)
        return {metric.name: float(metric.result()) for metric in sorted(self._tracked, key=lambda m: m.name)}
