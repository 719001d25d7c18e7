"""`tf_extopt.keras.fit`: train a Keras model with full-batch L-BFGS.

The documented flow is Adam first, then L-BFGS to finish:

```python
model.compile(optimizer="adam", loss="mse")
model.fit(x, y, epochs=200, verbose=0)          # Adam
history = tf_extopt.keras.fit(model, x, y, max_iterations=500)  # L-BFGS
```

Works with Keras 3 (TensorFlow backend) and with `tf_keras` models.

Deliberate differences from `model.fit`:

* One "epoch" is one L-BFGS iteration over the full objective: callbacks get
  `on_epoch_begin/end` once per iteration, both once the iteration is made
  (a run that converges at its start point makes no epoch), and `epochs` in
  their params is `max_iterations`. No `on_train_batch_*` calls are made:
  there are no batches from the callbacks' point of view. Keras `fit`
  arguments with no meaning here (`epochs`, `class_weight`, ...) are
  refused, saying what to pass instead.
* `logs['loss']` is the full-batch objective at the iterate (compiled loss
  plus `model.losses`, in training mode). Other training metrics and all
  `val_` metrics are computed with `model.evaluate` at the iterate (inference
  mode), so they cost one evaluation pass per iteration; they are computed
  only when the model was compiled with metrics / `validation_data` is given.
* With `batch_size` or a dataset, batch losses are weighted by their number
  of samples (Keras' per-step average weights a short last batch like a full
  one), so the objective is exactly the full-data mean.
* Layers that update state in training mode (batch normalization moving
  statistics) update it on every objective evaluation, including line-search
  trials, rather than once per step.
* The default `method='auto'` runs whichever of the on-device L-BFGS and
  SciPy's L-BFGS-B reaches a loss sooner for the run (see `fit`).
* Weight constraints that are bounds (`NonNeg`) become bounds, so L-BFGS-B
  keeps every iterate feasible; other constraints are refused (see `fit`).
  Keras' optimizers project the weights after each step instead.
* `BackupAndRestore` (Keras 3's or tf_keras') is honoured by `fit` itself,
  which saves what an L-BFGS run needs to resume as the same run (see
  `fit`): Keras' own callback would restore the weights only and rerun every
  iteration. The restored run's `History` holds the whole run's epochs
  (Keras': those since the restore).
* A callback that sets the weights when training ends
  (`EarlyStopping(restore_best_weights=True)`) gets `history.result`
  describing those weights (`status` 97). `ReduceLROnPlateau` and
  `LearningRateScheduler` warn: L-BFGS has no learning rate.

A model built under a `tf.distribute` strategy's scope (`MirroredStrategy`,
`MultiWorkerMirroredStrategy`) is fitted on it: the strategy splits the data
across replicas (`experimental_distribute_dataset`), each replica evaluates
its share, and one all-reduce per evaluation (per batch with `batch_size` or
a dataset) gives the full-data loss and gradient, weighted by each share's
exact number of samples, so the iterates are those of one device. Losses are
taken to be mean-reduced (Keras' default). With several workers, only the
chief shows the progress bar and runs `ModelCheckpoint`, `TensorBoard` and
`CSVLogger`; a callback that stops training on any worker stops all of them.
One difference remains: `BatchNormalization` in training mode normalizes
each replica's share with that share's own batch statistics (as Keras' own
`fit` on a `MirroredStrategy` does, unless the layer is
`synchronized=True`), so the objective, and the iterates, differ from one
device's. A model built outside any strategy is refused inside a strategy's
scope: Keras would divide its loss by the number of replicas.
"""

import warnings

import numpy as np
from scipy.optimize import OptimizeResult
import tensorflow as tf

from tf_extopt._interface import _checkpoint
from tf_extopt._interface import _distribute
from tf_extopt._interface import _packing
from tf_extopt._interface import _problem
from tf_extopt._interface import _run
from tf_extopt import _devices
from tf_extopt import _validation

__all__ = ["fit"]


def _keras_module(model):
  """The Keras package `model` belongs to: `keras` (3) or `tf_keras`."""
  for cls in type(model).__mro__:
    if cls.__module__.startswith("tf_keras"):
      import tf_keras  # pylint: disable=g-import-not-at-top
      return tf_keras
  import keras  # pylint: disable=g-import-not-at-top
  if not isinstance(model, keras.Model):
    raise TypeError("model must be a Keras 3 or tf_keras Model; got %s." %
                    type(model).__name__)
  return keras


def _is_keras3(module):
  return module.__name__ == "keras"


def _unscaled(value):
  """Undoes Keras' `1 / num_replicas` scaling of a loss under a strategy.

  Keras (3 and tf_keras) divides a mean-reduced loss and `model.losses` by
  `tf.distribute.get_strategy().num_replicas_in_sync`, in a replica and
  under a strategy's scope alike, so that summing the replicas' losses
  gives the mean. `fit` weights each replica by its exact share of the
  samples instead (exact also for uneven shares), so it needs the unscaled
  value, and multiplies by the same factor Keras divided by. Outside a
  strategy this is the identity. (`fit` refuses a foreign strategy's scope
  before any loss is traced: see `_distribute.check_scope`.)
  """
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  return value * replicas if replicas > 1 else value


def _compiled_loss_fn(model, keras_module):
  """`(x, y, y_pred, sw) -> loss + model.losses` from the compiled loss."""
  if _is_keras3(keras_module):
    if getattr(model, "_compile_loss", None) is None:
      return None
    return lambda x, y, y_pred, sw: _unscaled(model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True))
  if getattr(model, "compiled_loss", None) is None:
    return None
  return lambda x, y, y_pred, sw: _unscaled(
      model.compute_loss(x, y, y_pred, sw))


def _override_loss_fn(model, keras_module, loss):
  """`(x, y, y_pred, sw) -> loss + model.losses` from a `loss=` argument."""
  loss_obj = keras_module.losses.get(loss) if isinstance(loss, str) else loss
  if loss_obj is None or not callable(loss_obj):
    raise TypeError("loss must be a Keras loss name, a Loss instance or a "
                    "callable (y_true, y_pred); got %r." % (loss,))
  is_loss_class = isinstance(loss_obj, keras_module.losses.Loss)

  def fn(x, y, y_pred, sw):
    del x
    if is_loss_class:
      value = _unscaled(loss_obj(y, y_pred, sample_weight=sw))
    else:
      # A plain function returns per-sample values: weight them and average
      # over the batch, as Keras' default 'sum_over_batch_size' does.
      values = tf.convert_to_tensor(loss_obj(y, y_pred))
      if sw is not None:
        sw = tf.cast(sw, values.dtype)
        while sw.shape.rank > values.shape.rank and sw.shape[-1] == 1:
          sw = tf.squeeze(sw, -1)
        while sw.shape.rank < values.shape.rank:
          sw = sw[..., None]
        values = values * sw
      value = tf.reduce_mean(values)
    value = tf.convert_to_tensor(value)
    extra = [tf.cast(l, value.dtype) for l in model.losses]
    return value + tf.add_n(extra) if extra else value
  return fn


def _num_samples(x):
  leaf = tf.nest.flatten(x)[0]
  return tf.cast(tf.shape(leaf)[0], tf.float64)


def _unknown_rows(tensor):
  """`tensor`, its number of rows no longer known statically."""
  return tf.compat.v1.placeholder_with_default(
      tensor, [None] + tensor.shape[1:].as_list())


class _Objective:
  """The full-batch training objective as a zero-argument callable.

  In-memory arrays without `batch_size` are one batch: the loss is computed
  directly and differentiated by the caller's tape. Otherwise the batches
  are summed inside `Dataset.reduce`, each batch differentiated there, and a
  `tf.custom_gradient` hands the accumulated gradient to the caller's tape.
  """

  def __init__(self, model, batch_loss, variables, x, y, sample_weight,
               dataset):
    self._model = model
    self._batch_loss = batch_loss
    self._variables = variables
    self._data = (x, y, sample_weight)
    self._dataset = dataset
    # A dataset element as `(x, y, sample_weight)`, the way the model's
    # Keras unpacks it in `fit`.
    self._unpack = _keras_module(model).utils.unpack_x_y_sample_weight

  def _loss_on(self, x, y, sw):
    y_pred = self._model(x, training=True)
    return tf.cast(self._batch_loss(x, y, y_pred, sw), tf.float64)

  def __call__(self):
    if self._dataset is None:
      return self._loss_on(*self._data)
    variables = self._variables

    def reduce_fn(state, batch):
      x, y, sw = self._unpack(batch)
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        for v in variables:
          tape.watch(v)
        loss = self._loss_on(x, y, sw)
      grads = tape.gradient(loss, variables)
      n = _num_samples(x)
      count, total, sums = state
      # A tuple, not a list: tf.data would try to stack a list.
      sums = tuple(
          s + n * tf.cast(tf.convert_to_tensor(g), tf.float64)
          if g is not None else s for s, g in zip(sums, grads))
      return count + n, total + n * loss, sums

    @tf.custom_gradient
    def total_loss(*values):
      del values  # Only there to connect the caller's tape to the variables.
      init = (tf.constant(0., tf.float64), tf.constant(0., tf.float64),
              tuple(tf.zeros(v.shape, tf.float64) for v in variables))
      count, total, sums = self._dataset.reduce(init, reduce_fn)
      count = tf.maximum(count, 1.)

      def grad_fn(upstream, variables=None):
        grads = [tf.cast(upstream * s / count, v.dtype)
                 for s, v in zip(sums, self._variables)]
        if variables is not None:
          return grads, [None] * len(variables)
        return grads
      return total / count, grad_fn

    return total_loss(*[v.read_value() for v in variables])

  def replica_loss(self, strategy):
    """The objective as replicas' contributions over `strategy`'s split.

    In-memory data is one global batch that the strategy splits across
    replicas once; a dataset is distributed by the strategy and passed over
    at every evaluation. Each replica returns its batch's mean loss times
    its share of all samples, so the sum over replicas (and batches) is the
    full-data mean whatever the split.

    Returns:
      `(contribution, inputs)`: `contribution(batch)` is one replica's
      share of the loss, and `inputs` what the strategy distributed for it
      (see `_distribute.Replicas`).
    """
    if self._dataset is None:
      x, y, sw = self._data
      num_samples = int(_num_samples(x))
      parts = tuple(p for p in (x, y, sw) if p is not None)
      dataset = tf.data.Dataset.from_tensor_slices(parts).batch(num_samples)
      inputs = (next(iter(strategy.experimental_distribute_dataset(dataset))),)
    else:
      num_samples = int(self._dataset.reduce(
          tf.constant(0., tf.float64),
          lambda count, batch: count + _num_samples(self._unpack(batch)[0])))
      inputs = strategy.experimental_distribute_dataset(self._dataset)
    total = tf.constant(float(num_samples), tf.float64)

    def contribution(batch):
      x, y, sw = self._unpack(batch)
      if tf.nest.flatten(x)[0].shape[:1] == [0]:
        # A replica's share is empty (fewer samples than replicas). Keras,
        # seeing that statically, returns the empty per-sample losses
        # unreduced and then fails to add `model.losses` (or returns a loss
        # of shape [0]); with the size unknown it makes the usual scalar,
        # whose contribution is zero below.
        x, y, sw = (tf.nest.map_structure(_unknown_rows, part)
                    if part is not None else None for part in (x, y, sw))
      n = _num_samples(x)
      # An empty share's mean loss may be NaN (0 / 0); it contributes 0.
      return tf.where(n > 0, self._loss_on(x, y, sw) * (n / total), 0.)
    return contribution, inputs


def _is_infinite(dataset):
  """Whether `dataset` never ends, as far as its pipeline shows.

  `cardinality()` knows most infinite datasets, but a `filter()` after a
  `.repeat()` makes it unknown. So an unknown one is followed down its
  single-input chain: reaching an infinite dataset before any `take` or
  `take_while` (the ops that end an infinite input) means it never ends (or
  stalls, when the filter rejects everything from then on). Datasets of
  unknown size from generators are not knowable.
  """
  while True:
    card = int(dataset.cardinality())
    if card == tf.data.INFINITE_CARDINALITY:
      return True
    if card != tf.data.UNKNOWN_CARDINALITY or "Take" in type(dataset).__name__:
      return False
    try:
      inputs = dataset._inputs()  # pylint: disable=protected-access
    except (AttributeError, NotImplementedError):
      return False
    if len(inputs) != 1:
      return False
    dataset = inputs[0]


def _check_dataset(dataset, name):
  """Refuses a dataset `name` that is infinite or yields no batches."""
  if _is_infinite(dataset):
    raise ValueError(
        "%s is an infinite tf.data.Dataset (e.g. it ends in .repeat(), or "
        "filters a repeated dataset); every L-BFGS iteration passes over "
        "all of it, so it must be finite. Use .take(n) or drop .repeat()."
        % name)
  # A `filter()` makes the cardinality unknown: look at the first batch
  # (one pass over the pipeline until something comes out).
  card = int(dataset.cardinality())
  if card == 0 or (card == tf.data.UNKNOWN_CARDINALITY
                   and not any(True for _ in dataset.take(1))):
    raise ValueError(
        "%s is a tf.data.Dataset that yields no batches (empty, or emptied "
        "by filter()/take(0)); there is nothing to %s. Check the input "
        "pipeline." % (name, "fit" if name == "x" else "evaluate"))


def _check_sample_counts(x, y, sample_weight, names=("x", "y",
                                                     "sample_weight")):
  """Keras' cardinality check, before any graph is built."""
  sizes = {}
  for name, value in zip(names, (x, y, sample_weight)):
    if value is not None:
      sizes[name] = [int(tf.shape(leaf)[0]) if leaf.shape.rank else 1
                     for leaf in tf.nest.flatten(value)]
  counts = {n for per_name in sizes.values() for n in per_name}
  if len(counts) > 1:
    raise ValueError(
        "Data cardinality is ambiguous. Make sure all arrays contain the same "
        "number of samples. " + " ".join(
            "'%s' sizes: %s." % (name, ", ".join(map(str, per_name)))
            for name, per_name in sizes.items()))
  if counts == {0}:
    raise ValueError("%s is empty (0 samples): there is no data to %s." % (
        names[0], "fit" if names[0] == "x" else "evaluate"))


def _to_tensors(value):
  return None if value is None else tf.nest.map_structure(
      tf.convert_to_tensor, value)


def _validation_inputs(validation_data):
  """Checks `validation_data`; returns a dataset or `(x, y, sw)` tensors."""
  if validation_data is None or isinstance(validation_data,
                                           tf.data.Dataset):
    if validation_data is not None:
      _check_dataset(validation_data, "validation_data")
    return validation_data
  if (not isinstance(validation_data, (tuple, list))
      or len(validation_data) not in (2, 3)):
    raise ValueError(
        "validation_data must be (x_val, y_val), (x_val, y_val, "
        "sample_weight_val) or a finite tf.data.Dataset; got %s." % (
            "a %s of %d" % (type(validation_data).__name__,
                            len(validation_data))
            if isinstance(validation_data, (tuple, list))
            else type(validation_data).__name__))
  vx, vy, vsw = (tuple(_to_tensors(v) for v in validation_data)
                 + (None,))[:3]
  if vx is None or vy is None:
    raise ValueError("validation_data needs x_val and y_val; got None for "
                     "%s." % ("x_val" if vx is None else "y_val"))
  _check_sample_counts(vx, vy, vsw, ("validation_data's x_val", "y_val",
                                     "sample_weight_val"))
  return vx, vy, vsw


def _make_data(x, y, sample_weight, batch_size):
  """Returns `(x, y, sw, dataset)`: tensors, or a finite batched dataset."""
  if isinstance(x, tf.data.Dataset):
    if y is not None or sample_weight is not None:
      raise ValueError("When x is a tf.data.Dataset, y and sample_weight must "
                       "be None (the dataset yields them); got y=%s, "
                       "sample_weight=%s." % (type(y).__name__,
                                              type(sample_weight).__name__))
    if batch_size is not None:
      raise ValueError("batch_size must be None when x is a dataset (it is "
                       "already batched); got %r." % (batch_size,))
    _check_dataset(x, "x")
    return None, None, None, x
  if x is None:
    raise ValueError("x is required: arrays/tensors, or a finite "
                     "tf.data.Dataset.")
  x, y, sw = _to_tensors(x), _to_tensors(y), _to_tensors(sample_weight)
  _check_sample_counts(x, y, sw)
  if sw is not None and not any(bool(tf.reduce_any(leaf != 0))
                                for leaf in tf.nest.flatten(sw)):
    # Keras' mean would be 0 whatever the weights: a constant objective,
    # which L-BFGS would declare converged at the start.
    raise ValueError(
        "sample_weight is 0 for every sample, so the loss has no data term "
        "and there is nothing to fit; give some samples a positive weight.")
  if batch_size is None:
    return x, y, sw, None
  batch_size = _validation.positive_int(batch_size, "batch_size")
  parts = tuple(p for p in (x, y, sw) if p is not None)
  if sw is not None and y is None:
    raise ValueError("sample_weight needs y.")
  dataset = tf.data.Dataset.from_tensor_slices(parts).batch(batch_size)
  return None, None, None, dataset


def _has_metrics(model, keras_module):
  if _is_keras3(keras_module):
    return getattr(model, "_compile_metrics", None) is not None
  compiled = getattr(model, "compiled_metrics", None)
  return bool(compiled is not None and (
      getattr(compiled, "_user_metrics", None)
      or getattr(compiled, "_user_weighted_metrics", None)))


class _Epochs:
  """Keras' view of an L-BFGS run: one epoch per iteration.

  An instance is the run's `progress_callback`: each iteration is an epoch,
  with `logs['loss']` the objective at the iterate (from the optimizer, no
  evaluation added) plus `extra_logs()`; it drives the callbacks, the
  progress bar and `History` (with `evaluations`), and ends the run when a
  callback sets `model.stop_training` (or, with `stop_at_max`, after
  `max_iterations` epochs).

  `on_epoch_begin(k)` is called once iteration `k` has been made, just
  before `on_epoch_end(k)`: whether the optimizer makes another iteration
  (or any) is known only then, and Keras pairs every begin with an end.

  The on-device solver runs its iterations in compiled chunks and replays
  them here afterwards, each with the model's weights at its point.
  """

  def __init__(self, keras_module, model, callbacks, verbose,
               max_iterations, extra_logs, strategy=None, stop_at_max=False,
               restored=None, after_epoch=None):
    """Args: as the class says; `callbacks` a list (`_callback_list`), and:

    restored: None, or the `meta` of a restored backup: the run goes on
      from its `epoch` (the next epoch's index), with its `history`,
      `epochs` and `evaluations`, and `nit`/`nfev` offsets (`nit_offset`,
      `nfev_offset`) for an optimizer that counts from 0 again.
    after_epoch: None, or `fn(nit, nfev)` called after each epoch's
      callbacks, with the whole run's counts (a backup's save).
    """
    K = keras_module
    callbacks = list(callbacks)
    for cb in callbacks:
      for name in ("ReduceLROnPlateau", "LearningRateScheduler"):
        cls = getattr(K.callbacks, name, None)
        if cls is not None and isinstance(cb, cls):
          warnings.warn(
              "%s sets model.optimizer's learning rate, which L-BFGS does "
              "not use: it has no effect on this fit, and the rate it sets "
              "stays for a later model.fit. Remove it from the callbacks."
              % name, UserWarning, stacklevel=3)
    if not _distribute.is_chief(strategy):
      # Other workers run every callback but those that write (the chief
      # writes for all; every worker sees the same logs).
      writers = tuple(getattr(K.callbacks, name) for name in
                      ("ModelCheckpoint", "TensorBoard", "CSVLogger")
                      if hasattr(K.callbacks, name))
      callbacks = [cb for cb in callbacks if not isinstance(cb, writers)]
      verbose = 0
    history = None
    for cb in callbacks:
      if isinstance(cb, K.callbacks.History):
        history = cb
    if history is None:
      history = K.callbacks.History()
      callbacks.append(history)
    self._model = model
    self._strategy = strategy
    self._history = history
    self._max_iterations = max_iterations
    self._stop_at_max = stop_at_max
    self._extra_logs = extra_logs
    self._callbacks = K.callbacks.CallbackList(
        callbacks, add_history=False, add_progbar=False, model=model,
        verbose=verbose, epochs=max_iterations, steps=1)
    self._verbose = verbose
    self._progbar = (K.utils.Progbar(target=max_iterations, verbose=verbose,
                                     unit_name="iteration")
                     if verbose else None)
    self._epoch = 0
    self._nit_offset = self._nfev_offset = 0
    self._after_epoch = after_epoch
    self._logs = {}
    history.evaluations = []
    model.stop_training = False
    self._callbacks.on_train_begin()
    if restored is not None:
      # After on_train_begin, which empties `History.epoch`: the restored
      # run's history goes on from the interrupted run's.
      self._epoch = int(restored["epoch"])
      self._nit_offset = int(restored.get("nit_offset", 0))
      self._nfev_offset = int(restored.get("nfev_offset", 0))
      history.history = {k: list(v) for k, v in restored["history"].items()}
      history.epoch = list(restored["epochs"])
      history.evaluations = list(restored["evaluations"])

  @property
  def epoch(self):
    """The number of epochs (iterations reported) so far."""
    return self._epoch

  @property
  def history(self):
    """The `History` callback."""
    return self._history

  def __call__(self, progress):
    epoch = self._epoch
    nfev = int(progress.nfev) + self._nfev_offset
    self._callbacks.on_epoch_begin(epoch)
    self._history.evaluations.append(nfev)
    logs = {"loss": float(progress.fun)}
    logs.update(self._extra_logs())
    self._callbacks.on_epoch_end(epoch, logs)
    self._logs = logs
    self._epoch = epoch + 1
    if self._after_epoch is not None:
      self._after_epoch(int(progress.nit) + self._nit_offset, nfev)
    if self._progbar is not None:
      # Show the values at the iterate, not running averages.
      self._progbar.stateful_metrics = set(logs)
      # verbose=2 prints a bar's line only when finalized: one per
      # iteration, as Keras prints one per epoch.
      self._progbar.update(epoch + 1, [(k, v) for k, v in logs.items()],
                           finalize=True if self._verbose == 2 else None)
    stop = getattr(self._model, "stop_training", False)
    if _distribute.any_worker(self._strategy, stop) or (
        self._stop_at_max and self._epoch >= self._max_iterations):
      raise StopIteration

  def end(self, result):
    """Closes the run; returns the `History` with `result` attached."""
    if (self._verbose == 1 and self._progbar is not None
        and self._epoch < self._max_iterations):
      # Ended early (converged or stopped): close the bar where it stands.
      self._progbar.target = self._epoch
      self._progbar.update(self._epoch, finalize=True)
    self._callbacks.on_train_end(self._logs)
    self._history.result = result
    self._model.history = self._history
    return self._history


# Keras `model.fit` arguments that have no meaning here, and what to do.
_KERAS_FIT_ONLY = {
    "epochs": "each L-BFGS iteration is one epoch: pass max_iterations",
    "initial_epoch": "a run starts at iteration 0",
    "steps_per_epoch": "every iteration passes over all the data",
    "validation_split": "pass validation_data",
    "validation_steps": "validation_data is evaluated in full",
    "validation_batch_size": "validation_data is evaluated in full",
    "validation_freq": "validation_data is evaluated every iteration",
    "shuffle": "the full-batch objective does not depend on the order",
    "class_weight": "pass sample_weight",
    "max_queue_size": "the data is passed over as given",
    "workers": "the data is passed over as given",
    "use_multiprocessing": "the data is passed over as given",
}


# `method='auto'` runs on the device from this many iterations up: below
# it, on a CPU, the on-device solver's fixed cost (tracing and optimising
# its graph, once per fit) is not paid back by its cheaper iterations
# (benchmarks/README.md, "Time to a loss").
AUTO_ON_DEVICE_ITERATIONS = 200
# The path `method='auto'` takes for short runs.
_AUTO_SCIPY_METHOD = "L-BFGS-B"


def _auto_method(options, max_iterations, jit_compile, backup):
  """The method `method='auto'` stands for in this fit.

  On the device (`'lbfgs'`) wherever it is measured or expected to win, or
  where only it gives what was asked for: runs of at least
  `AUTO_ON_DEVICE_ITERATIONS` iterations, XLA (`jit_compile=True`), a
  `BackupAndRestore` callback (only its resumed run takes the
  uninterrupted run's iterates), a GPU or TPU (where every host round
  trip costs more; untested), or `lbfgs_minimize` options. SciPy's
  L-BFGS-B, the same algorithm with a host round trip per evaluation but
  next to nothing to compile, for shorter runs on a CPU, and whenever
  SciPy's own `options` or `tol` are given. Not the strategy: a model on
  several replicas takes the method it would take on one device, and so
  its iterates.
  """
  if "options" in options or "tol" in options:
    return _AUTO_SCIPY_METHOD
  if (max_iterations >= AUTO_ON_DEVICE_ITERATIONS or jit_compile
      or backup is not None or _devices.accelerator_visible()
      or set(options) - {"var_to_bounds"}):
    return "lbfgs"
  return _AUTO_SCIPY_METHOD


def _check_options(options):
  """Refuses Keras `fit` arguments passed as method options."""
  for name in options:
    if name in _KERAS_FIT_ONLY:
      raise ValueError(
          "%s is a Keras model.fit argument, which tf_extopt.keras.fit does "
          "not take (%s)." % (name, _KERAS_FIT_ONLY[name]))


def _constraint_bounds(model, packer, var_to_bounds, method):
  """`var_to_bounds` with the model's weight constraints added as bounds.

  Keras' optimizers apply a variable's `constraint` after each step. Behind
  L-BFGS's back that projection would break its line search and memory, so
  instead the constraints that are bounds (`NonNeg`; see
  `_packing.constraint_box`) become bounds, intersected with the user's:
  L-BFGS-B then keeps every iterate inside them. Any other constraint is
  refused.

  Returns:
    The user's `var_to_bounds` when no variable has a constraint, else a
    list of `(variable, (low, high))` pairs.

  Raises:
    ValueError: A constraint that is not a box, a method that cannot take
      bounds, or bounds that leave no value.
  """
  pairs = _packing.variable_constraints(model)
  if not pairs:
    return var_to_bounds
  from tf_extopt.external_optimizer import _BOUNDS_METHODS  # pylint: disable=g-import-not-at-top
  for var, constraint in pairs:
    if _packing.constraint_box(constraint, var.shape) is None:
      raise ValueError(
          "Variable %r has the constraint %s, which L-BFGS cannot honour: "
          "only constraints that are bounds are (NonNeg; MaxNorm and "
          "MinMaxNorm over single elements), and they become bounds. "
          "Remove the constraint, or minimize the loss with "
          "ScipyOptimizerInterface(method='SLSQP' or 'trust-constr') and "
          "the constraint written as equalities/inequalities." % (
              var.name, type(constraint).__name__))
  if method.lower() != "lbfgs" and method.lower() not in [
      m.lower() for m in _BOUNDS_METHODS]:
    raise ValueError(
        "Variable %r has the constraint %s, which fit turns into bounds, but "
        "method=%r cannot take bounds; use method='lbfgs' or one of %s." % (
            pairs[0][0].name, type(pairs[0][1]).__name__, method,
            ", ".join(_BOUNDS_METHODS)))
  packed = packer.packed_bounds(var_to_bounds)
  if packed is None:
    packed = (np.full(packer.size, -np.inf), np.full(packer.size, np.inf))
  lowers, uppers = (packer.split(b) for b in packed)
  index = {id(v): i for i, v in enumerate(packer.variables)}
  for var, constraint in pairs:
    i = index[id(var)]
    low, high = _packing.constraint_box(constraint, var.shape)
    lowers[i] = np.maximum(lowers[i], low)
    uppers[i] = np.minimum(uppers[i], high)
    if (lowers[i] > uppers[i]).any():
      raise ValueError(
          "var_to_bounds and the constraint %s of variable %r leave it no "
          "value." % (type(constraint).__name__, var.name))
  return [(v, (lo.reshape(shape), hi.reshape(shape)))
          for v, shape, lo, hi in zip(packer.variables, packer.shapes,
                                      lowers, uppers)]


def _callback_list(keras_module, callbacks):
  """`callbacks` as a new list; one callback is accepted, as Keras does."""
  if isinstance(callbacks, keras_module.callbacks.Callback):
    return [callbacks]
  if callbacks is not None and not isinstance(callbacks, (list, tuple)):
    raise TypeError("callbacks must be a list of Keras callbacks; got %s."
                    % type(callbacks).__name__)
  return list(callbacks or [])


def _take_backup(keras_module, callbacks):
  """Takes the `BackupAndRestore` callback out of `callbacks`.

  `fit` does its job itself (see `fit`'s docstring): Keras' own callback
  would save only the weights and the epoch, non-atomically (Keras 3), and
  restore them into `model.fit`'s private counters. Its arguments are
  honoured.

  Returns:
    `(backup, callbacks)`: a `_checkpoint.Backup` or None, and the other
    callbacks.

  Raises:
    ValueError: Several `BackupAndRestore` callbacks, a `save_freq` that is
      not `'epoch'` or a positive int, or tf_keras' `save_before_preemption`.
  """
  cls = getattr(keras_module.callbacks, "BackupAndRestore", None)
  found = [cb for cb in callbacks if cls is not None and isinstance(cb, cls)]
  if not found:
    return None, callbacks
  if len(found) > 1:
    raise ValueError("callbacks holds %d BackupAndRestore callbacks; a fit "
                     "has one backup: pass one." % len(found))
  cb = found[0]
  save_freq = cb.save_freq
  if save_freq == "epoch":
    every = 1
  elif (isinstance(save_freq, (int, np.integer))
        and not isinstance(save_freq, bool) and save_freq >= 1):
    # One epoch is one iteration, of one batch for the callbacks: saving
    # every N batches is saving every N iterations.
    every = int(save_freq)
  else:
    raise ValueError(
        "BackupAndRestore's save_freq must be 'epoch' (a backup after every "
        "L-BFGS iteration) or a positive int N (every N iterations) for "
        "tf_extopt.keras.fit; got %r." % (save_freq,))
  if getattr(cb, "save_before_preemption", False):
    raise ValueError(
        "BackupAndRestore(save_before_preemption=True) is not supported by "
        "tf_extopt.keras.fit (it needs tf.distribute's preemption handler "
        "inside Keras' own fit); use save_freq='epoch' or an int.")
  backup = _checkpoint.Backup(
      cb.backup_dir, every, delete=bool(cb.delete_checkpoint),
      double=bool(getattr(cb, "double_checkpoint", False)))
  return backup, [c for c in callbacks if c is not cb]


def _fit_identity(model, packer, method, options, bounds, loss):
  """What a backup must share with this fit for the fit to resume from it.

  The model's weights (shapes and dtypes, all of them and which are
  optimized), the method, its options and the bounds, and a `loss=`
  argument. Not `max_iterations`, which a resumed fit may raise, nor
  `iterations_per_call`, `batch_size` or `jit_compile`, which change how
  the objective is computed, not what it is.
  """
  packed = packer.packed_bounds(bounds)
  return dict(
      weights=[[list(w.shape), tf.as_dtype(w.dtype).name]
               for w in model.weights],
      optimized=[[list(shape), tf.as_dtype(dtype).name]
                 for shape, dtype in zip(packer.shapes, packer.dtypes)],
      method=method.lower(),
      options=_checkpoint.fingerprint(
          {k: v for k, v in options.items() if k != "iterations_per_call"}),
      bounds=None if packed is None else _checkpoint.fingerprint(
          np.stack(packed)),
      loss=_checkpoint.fingerprint(loss))


def _jsonable(value):
  """`value` with NumPy scalars and arrays (in Keras logs) as Python ones."""
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)) or tf.is_tensor(value):
    return np.asarray(value).tolist()
  return value


def _restore(backup, identity, model, strategy, counts_carried):
  """Restores the model's weights from `backup`, if there is one.

  `counts_carried`: the optimizer resumes from the saved solver state,
  which carries the iteration and evaluation counts on; otherwise (SciPy,
  which counts from 0 again) the backup's counts are offsets to add.

  Every worker reads the backup (only the chief writes it), then all check
  that they read the same one: a backup directory that is not shared
  storage would have them resume at different iterations, and the run
  would hang or mix them.

  Returns:
    `(restored, solver_state)`: None and None without a backup; else the
    meta for `_Epochs` (with the count offsets `nit_offset` and
    `nfev_offset`) and the solver's serialized state (or None).

  Raises:
    ValueError: The backup belongs to another fit, is damaged, or the
      workers read different backups.
  """
  loaded = backup.load(identity)
  epoch = -1 if loaded is None else int(loaded[0]["epoch"])
  if not _distribute.same_on_all_workers(strategy, epoch):
    raise ValueError(
        "The workers found different backups in %s (this one: %s). Every "
        "worker must read the chief's backup: put backup_dir on storage all "
        "of them share." % (backup.directory, "none" if loaded is None else
                            "iteration %d" % loaded[0]["nit"]))
  if loaded is None:
    return None, None
  meta, arrays = loaded
  weights = [arrays["weight/%d" % i] for i in range(len(model.weights))]
  model.set_weights(weights)
  solver = arrays.get("solver")
  if counts_carried:
    restored = dict(meta, nit_offset=0, nfev_offset=0)
  else:
    restored = dict(meta, nit_offset=meta["nit"], nfev_offset=meta["nfev"])
  return restored, None if solver is None else solver.tobytes()


def _restored_result(problem, result):
  """The result for weights a callback set after the run.

  `EarlyStopping(restore_best_weights=True)` sets the weights of its best
  epoch in `on_train_end`. The result then describes them (one more
  evaluation: `fun` and `jac` there, in training mode) and not the point
  the optimizer ended on, with `success` False: the restored point was not
  shown to be a minimum.
  """
  x, fun, jac = problem.describe_variables()
  carried = {k: result[k] for k in ("nit", "nfev", "njev", "method")
             if k in result}
  return OptimizeResult(
      x=x, fun=fun, jac=jac, success=False, status=_run.STATUS_RESTORED,
      message="A callback set the weights to another point when training "
      "ended (e.g. EarlyStopping(restore_best_weights=True)); x, fun and "
      "jac describe that point, not the optimizer's end point. Optimizer's "
      "message: %s" % result.get("message", ""),
      optimizer_status=result.get("status"), **carried)


def fit(model, x=None, y=None, batch_size=None, sample_weight=None,
        validation_data=None, callbacks=None, verbose=1, method="auto",
        max_iterations=100, loss=None, jit_compile=False, **options):
  """Trains `model` by minimizing its full-batch loss with L-BFGS.

  Args:
    model: A built or buildable Keras 3 or `tf_keras` `Model`.
    x: Inputs (arrays, tensors, or a dict/list of them), or a finite
      `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)` batches.
    y: Targets (None when `x` is a dataset).
    batch_size: None (default) evaluates the objective on all samples at
      once; an int splits it into batches whose gradients are accumulated
      (for data that does not fit in one pass). The objective is the same.
    sample_weight: Optional per-sample weights (None with a dataset), not
      all zero.
    validation_data: Optional `(x_val, y_val)` or `(x_val, y_val, sw)`
      tuple or finite dataset; `val_` metrics are logged each iteration.
    callbacks: List of Keras callbacks (of the model's Keras package), or
      one callback. Each iteration is one epoch. `model.stop_training =
      True` ends the run. `ReduceLROnPlateau` and `LearningRateScheduler`
      get a warning: they change a learning rate L-BFGS does not use.
    verbose: 0 silent, 1 progress bar over iterations, 2 one line per
      iteration.
    method: `'auto'` (default), `'lbfgs'` (on-device
      `LbfgsOptimizerInterface`) or a `scipy.optimize.minimize` method
      name (`ScipyOptimizerInterface`). `'auto'` takes whichever of
      `'lbfgs'` and `'L-BFGS-B'` (the same algorithm through SciPy) reaches
      a loss sooner: on a CPU, `'L-BFGS-B'` for runs shorter than
      `AUTO_ON_DEVICE_ITERATIONS` (200) iterations, whose time the
      on-device solver's one-off tracing would dominate; `'lbfgs'` for
      longer runs, and always with `jit_compile=True`, a
      `BackupAndRestore` callback, a GPU or TPU, or `lbfgs_minimize`
      options (SciPy's `options`/`tol` take `'L-BFGS-B'`).
      `history.result.method` says which ran.
    max_iterations: Maximum number of iterations (SciPy: `maxiter`; TNC,
      which has no iteration limit, is stopped after `max_iterations`
      iterations, with `status` 99).
    loss: Optional Keras loss (name, `Loss` or `fn(y_true, y_pred)`)
      replacing the compiled loss; `model.losses` are still added.
    jit_compile: Compile the objective (and, for `'lbfgs'`, the solver)
      with XLA. Only for in-memory data without `batch_size`, and not for a
      model distributed over several replicas.
    **options: Method options: `lbfgs_minimize` options for `'lbfgs'`
      (`tolerance`, `num_correction_pairs`, `dtype`, ...); for SciPy
      methods, `options={...}` (merged with `maxiter`) and other
      `scipy.optimize.minimize` keywords (`tol`). Both take
      `var_to_bounds`. Keras `model.fit` arguments (`epochs`, ...) are
      refused, saying what to pass instead.

  Returns:
    The `History` callback: `history.history['loss']` has one entry per
    iteration; `history.evaluations[i]` is the number of objective
    evaluations (loss and gradient over the full data) made by the end of
    iteration `i`; `history.result` is the optimizer's `OptimizeResult`,
    with `method` the method that ran (None when `max_iterations=0`).
    When a callback set the weights to another point at the end (`EarlyStopping(restore_best_weights=True)`),
    `history.result` describes the weights the model holds: `x`, and `fun`
    and `jac` evaluated there (one more evaluation), with `success` False,
    `status` 97 and the optimizer's own status in `optimizer_status`.

  Raises:
    TypeError: `model` is not a Keras model, `loss` is not a loss, or
      `callbacks` is not a list of callbacks.
    ValueError: An uncompiled model without `loss=`, an infinite or empty
      dataset (`x` or `validation_data`), empty arrays, `x`/`y`/
      `sample_weight` (or `validation_data`'s) with different numbers of
      samples, a `sample_weight` of all zeros, `validation_data` that is
      not `(x_val, y_val[, sw])` or a dataset, a model without trainable
      variables, a weight constraint that is not a bound (see below), a
      Keras `fit` argument or another unknown option, a bad argument, a
      model built under a strategy that cannot be used (see
      `LbfgsOptimizerInterface`'s `distribute_strategy`), or a call inside
      the scope of a strategy that did not create the model (Keras would
      divide the loss by its number of replicas; build and compile the
      model inside the scope, as Keras' own `fit` requires).

  A `BackupAndRestore(backup_dir)` callback (Keras 3 or tf_keras) makes a
  killed fit, started again with the same command, resume where it
  stopped. After every iteration (`save_freq='epoch'`) or every `N`
  (`save_freq=N`), one file in `backup_dir` is written (to a temporary
  file, then renamed: a kill mid-save leaves the previous backup), by the
  chief only under `MultiWorkerMirroredStrategy`: the model's weights, the
  iteration and evaluation counts, the history, and for `'lbfgs'` the
  solver's state (its memory included), and what the fit was (weights'
  shapes and dtypes, method, options, bounds, `loss`). A restarted fit
  restores it on every worker before its first iteration and runs only the
  remaining iterations: with `'lbfgs'` on the uninterrupted run's
  iterates; with SciPy, whose memory lives inside SciPy, as a fresh SciPy
  run from the restored weights for the remaining iterations (the counts
  and history go on). `delete_checkpoint` removes the backup when the fit
  ends, and Keras 3's `double_checkpoint` keeps the one before too.
  Raises `ValueError` for a backup of another fit (naming what differs), a
  damaged one, workers that read different backups, several
  `BackupAndRestore` callbacks, a `save_freq` other than `'epoch'` or a
  positive int, or tf_keras' `save_before_preemption=True`.

  Weight constraints (`kernel_constraint=...`) that are bounds become bounds
  (merged with `var_to_bounds`), so `'lbfgs'` runs L-BFGS-B and SciPy needs
  a method that takes bounds: `NonNeg` is `[0, inf)`, and `MaxNorm(m)` or
  `MinMaxNorm(min_value <= 0, max_value=m)` over single elements is
  `[-m, m]`. Other constraints (`UnitNorm`, norms of whole rows or columns,
  custom ones) are refused: Keras' optimizers project the weights after
  each step, but a projection the optimizer does not know about breaks
  L-BFGS's line search and memory (the step it measured is not the one
  taken), where bounds keep every iterate feasible and the method exact.
  """
  K = _keras_module(model)
  from tf_extopt.external_optimizer import ScipyOptimizerInterface  # pylint: disable=g-import-not-at-top
  from tf_extopt.lbfgs_interface import LbfgsOptimizerInterface  # pylint: disable=g-import-not-at-top

  max_iterations = _validation.positive_int(max_iterations, "max_iterations",
                                            minimum=0)
  if verbose not in (0, 1, 2, "auto"):
    raise ValueError("verbose must be 0, 1, 2 or 'auto'; got %r." %
                     (verbose,))
  verbose = 1 if verbose == "auto" else verbose
  if not isinstance(method, str):
    raise ValueError("method must be 'auto', 'lbfgs' or a SciPy method name; "
                     "got %r." % (method,))
  _check_options(options)
  if loss is not None:
    batch_loss = _override_loss_fn(model, K, loss)
  else:
    batch_loss = _compiled_loss_fn(model, K)
    if batch_loss is None:
      raise ValueError(
          "The model has no loss: compile it with a loss "
          "(model.compile(loss=...)) or pass loss= to tf_extopt.keras.fit.")
  x_t, y_t, sw_t, dataset = _make_data(x, y, sample_weight, batch_size)
  validation = _validation_inputs(validation_data)
  if jit_compile and dataset is not None:
    raise ValueError("jit_compile=True needs in-memory data without "
                     "batch_size (tf.data cannot be XLA-compiled).")
  if not model.trainable_variables and not model.built and x_t is not None:
    model(x_t)  # Build it, as Keras' fit would.
  if not model.trainable_variables:
    raise ValueError("The model has no trainable variables (is it built, "
                     "and are its layers trainable?); nothing to fit.")
  # The variables and the strategy are resolved here, once: the strategy
  # decides how the loss is built (`_Objective.replica_loss`), and the
  # interfaces get both in the problem (`_problem.Problem.on_replicas`).
  packer = _packing.VariablePacker(_packing.resolve_var_list(model, "model"))
  strategy = _distribute.resolve_strategy(packer.variables, None, False,
                                          jit_compile)
  _distribute.check_scope(strategy, "tf_extopt.keras.fit")
  objective = _Objective(model, batch_loss, packer.variables, x_t, y_t, sw_t,
                         dataset)
  contribution, replica_inputs = objective, ()
  if strategy is not None:
    contribution, replica_inputs = objective.replica_loss(strategy)

  options = dict(options)  # Never mutate the caller's dicts.
  callbacks = _callback_list(K, callbacks)
  backup, callbacks = _take_backup(K, callbacks)
  if method.lower() == "auto":
    method = _auto_method(options, max_iterations, jit_compile, backup)
  on_device = method.lower() == "lbfgs"
  bounds = _constraint_bounds(model, packer,
                              options.pop("var_to_bounds", None), method)
  problem = _problem.Problem.on_replicas(packer, strategy, contribution,
                                         replica_inputs, bounds, jit_compile)
  restored, solver_state = None, None
  if backup is not None:
    identity = _fit_identity(model, packer, method, options, bounds, loss)
    restored, solver_state = _restore(backup, identity, model, strategy,
                                      counts_carried=on_device)
  # Only the chief writes the backup, as Keras does; every worker holds the
  # same weights and solver state.
  writes_backup = backup is not None and _distribute.is_chief(strategy)
  stop_at_max = False
  if on_device:
    if "max_iterations" in options:
      raise ValueError("Pass max_iterations as fit's own argument, not as a "
                       "method option.")
    # The solver's state exists only at chunk ends: with a backup, make one
    # at every iteration where a backup is due.
    opt = LbfgsOptimizerInterface._on_problem(  # pylint: disable=protected-access
        problem, chunk_multiple=None if backup is None else backup.every,
        max_iterations=max_iterations, **options)
    if solver_state is not None:
      opt.deserialize(solver_state)
  else:
    scipy_options = dict(options.pop("options", None) or {})
    # TNC has no iteration limit (its old `maxiter` counted evaluations):
    # the epochs stop it instead.
    stop_at_max = method.lower() == "tnc"
    if not stop_at_max:
      scipy_options.setdefault("maxiter", max_iterations)
      if restored is not None:
        # SciPy's own state (its memory) cannot be restored: a fresh SciPy
        # run from the restored weights makes the remaining iterations.
        scipy_options["maxiter"] = max(
            0, scipy_options["maxiter"] - restored["nit_offset"])
    opt = ScipyOptimizerInterface._on_problem(  # pylint: disable=protected-access
        problem, method=method, options=scipy_options, **options)

  with_metrics = _has_metrics(model, K)

  def extra_logs():
    """Training metrics and `val_` metrics at the variables' point."""
    logs = {}
    if with_metrics:
      data = dataset if dataset is not None else x_t
      kwargs = {} if dataset is not None else dict(y=y_t,
                                                   sample_weight=sw_t)
      values = model.evaluate(data, verbose=0, return_dict=True, **kwargs)
      logs.update({k: float(v) for k, v in values.items() if k != "loss"})
    if validation is not None:
      if isinstance(validation, tf.data.Dataset):
        values = model.evaluate(validation, verbose=0, return_dict=True)
      else:
        vx, vy, vsw = validation
        values = model.evaluate(vx, vy, sample_weight=vsw, verbose=0,
                                return_dict=True)
      logs.update({"val_" + k: float(v) for k, v in values.items()})
    return logs

  after_epoch = None
  if writes_backup:
    last_saved = [0 if restored is None else restored["nit"]]

    def after_epoch(nit, nfev):
      if nit // backup.every <= last_saved[0] // backup.every:
        return
      arrays = {"weight/%d" % i: w for i, w in enumerate(model.get_weights())}
      if on_device:
        state = opt.state
        if int(state.num_iterations) != nit:
          # Chunks end where backups are due (`_chunk_multiple`), so this
          # does not happen; never save a state that is not at `nit`.
          return
        arrays["solver"] = np.frombuffer(opt.serialize(), np.uint8)
      history = epochs.history
      meta = dict(epoch=epochs.epoch, nit=nit, nfev=nfev,
                  history=history.history, epochs=list(history.epoch),
                  evaluations=list(history.evaluations))
      backup.save(identity, _jsonable(meta), arrays)
      last_saved[0] = nit

  epochs = _Epochs(K, model, callbacks, verbose, max_iterations, extra_logs,
                   strategy, stop_at_max=stop_at_max, restored=restored,
                   after_epoch=after_epoch)
  if not max_iterations:
    history = epochs.end(None)
    if writes_backup:
      backup.end()
    return history
  if (restored is not None and not on_device
      and restored["nit"] >= max_iterations):
    # The backup's run had made all its iterations (killed before it
    # ended): SciPy would still make one with maxiter=0.
    x, fun, jac = problem.describe_variables()
    result = OptimizeResult(
        x=x, fun=fun, jac=jac, success=False, status=1, nit=0, nfev=0,
        message="Stopped after max_iterations=%d iterations, all made "
        "before the restored backup." % max_iterations)
  else:
    result = opt.minimize(progress_callback=epochs)
  result = OptimizeResult(result, method=method)
  if restored is not None and not on_device:
    # The whole run's counts, as the on-device solver's results keep them.
    result["nit"] = int(result.get("nit", 0)) + restored["nit_offset"]
    result["nfev"] = int(result.get("nfev", 0)) + restored["nfev_offset"]
  held = packer.pack_values().numpy()
  history = epochs.end(result)
  if writes_backup:
    backup.end()
  # Every worker runs the same callbacks on the same logs; vote anyway, so
  # that all of them make the evaluation (an all-reduce) or none.
  if _distribute.any_worker(strategy, not np.array_equal(
      packer.pack_values().numpy(), held)):
    history.result = _restored_result(problem, result)
  return history
