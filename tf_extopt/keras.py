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
  `on_epoch_begin/end` once per iteration, and `epochs` in their params is
  `max_iterations`. No `on_train_batch_*` calls are made: there are no
  batches from the callbacks' point of view.
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

A model built under a `tf.distribute` strategy's scope (`MirroredStrategy`,
`MultiWorkerMirroredStrategy`) is fitted on it: the strategy splits the data
across replicas (`experimental_distribute_dataset`), each replica evaluates
its share, and one all-reduce per evaluation (per batch with `batch_size` or
a dataset) gives the full-data loss and gradient, weighted by each share's
exact number of samples, so the iterates are those of one device. Losses are
taken to be mean-reduced (Keras' default). With several workers, only the
chief shows the progress bar and runs `ModelCheckpoint`, `TensorBoard` and
`CSVLogger`; a callback that stops training on any worker stops all of them.
"""

import tensorflow as tf

from tf_extopt import _distribute
from tf_extopt import _packing
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
  """Undoes Keras' `1 / num_replicas` scaling of a loss in replica context.

  Keras (3 and tf_keras) divides a mean-reduced loss and `model.losses` by
  the number of replicas when computed in a replica, so that summing the
  replicas' losses gives the mean. `fit` weights each replica by its exact
  share of the samples instead (exact also for uneven shares), so it needs
  the unscaled value. Outside a strategy this is the identity.
  """
  context = tf.distribute.get_replica_context()
  replicas = 1 if context is None else context.num_replicas_in_sync
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


def _unpack_batch(batch):
  if isinstance(batch, (tuple, list)):
    if len(batch) == 1:
      return batch[0], None, None
    if len(batch) == 2:
      return batch[0], batch[1], None
    if len(batch) == 3:
      return tuple(batch)
    raise ValueError("Dataset elements must be x, (x,), (x, y) or (x, y, "
                     "sample_weight); got a tuple of %d." % len(batch))
  return batch, None, None


def _num_samples(x):
  leaf = tf.nest.flatten(x)[0]
  return tf.cast(tf.shape(leaf)[0], tf.float64)


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

  def _loss_on(self, x, y, sw):
    y_pred = self._model(x, training=True)
    return tf.cast(self._batch_loss(x, y, y_pred, sw), tf.float64)

  def __call__(self):
    if self._dataset is None:
      return self._loss_on(*self._data)
    variables = self._variables

    def reduce_fn(state, batch):
      x, y, sw = _unpack_batch(batch)
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
          lambda count, batch: count + _num_samples(_unpack_batch(batch)[0])))
      inputs = strategy.experimental_distribute_dataset(self._dataset)
    total = tf.constant(float(num_samples), tf.float64)

    def contribution(batch):
      x, y, sw = _unpack_batch(batch)
      n = _num_samples(x)
      # A replica may get an empty share (fewer samples than replicas);
      # its mean loss is then NaN, and its contribution zero.
      return tf.where(n > 0, self._loss_on(x, y, sw) * (n / total), 0.)
    return _distribute.ReplicaLoss(contribution, inputs)


def _check_dataset(dataset):
  card = int(dataset.cardinality())
  if card == tf.data.INFINITE_CARDINALITY:
    raise ValueError(
        "x is an infinite tf.data.Dataset (e.g. it ends in .repeat()); the "
        "L-BFGS objective is a full pass over the data, so x must be finite. "
        "Use .take(n) or drop .repeat().")
  # A `filter()` makes the cardinality unknown: look at the first batch
  # (one pass over the pipeline until something comes out).
  if card == 0 or (card == tf.data.UNKNOWN_CARDINALITY
                   and not any(True for _ in dataset.take(1))):
    raise ValueError(
        "x is a tf.data.Dataset that yields no batches (empty, or emptied by "
        "filter()/take(0)); the L-BFGS objective would be a mean over zero "
        "samples. Check the input pipeline.")


def _check_sample_counts(x, y, sample_weight):
  """Keras' cardinality check, before any graph is built."""
  sizes = {}
  for name, value in (("x", x), ("y", y), ("sample_weight", sample_weight)):
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
    raise ValueError("x is empty (0 samples): there is no data to fit.")


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
    _check_dataset(x)
    return None, None, None, x
  if x is None:
    raise ValueError("x is required: arrays/tensors, or a finite "
                     "tf.data.Dataset.")
  to_tensor = lambda a: None if a is None else tf.nest.map_structure(
      tf.convert_to_tensor, a)
  x, y, sw = to_tensor(x), to_tensor(y), to_tensor(sample_weight)
  _check_sample_counts(x, y, sw)
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

  An instance is the run's `progress_callback`: each iteration ends an
  epoch, with `logs['loss']` the objective at the iterate (from the
  optimizer, no evaluation added) plus `extra_logs()`; it drives the
  callbacks, the progress bar and `History` (with `evaluations`), and ends
  the run when a callback sets `model.stop_training`.
  """

  def __init__(self, keras_module, model, callbacks, verbose,
               max_iterations, extra_logs, strategy=None):
    K = keras_module
    # One callback is accepted as Keras' own `fit` does.
    if isinstance(callbacks, K.callbacks.Callback):
      callbacks = [callbacks]
    elif callbacks is not None and not isinstance(callbacks, (list, tuple)):
      raise TypeError("callbacks must be a list of Keras callbacks; got %s."
                      % type(callbacks).__name__)
    callbacks = list(callbacks or [])
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
    self._extra_logs = extra_logs
    self._callbacks = K.callbacks.CallbackList(
        callbacks, add_history=False, add_progbar=False, model=model,
        verbose=verbose, epochs=max_iterations, steps=1)
    self._progbar = (K.utils.Progbar(target=max_iterations, verbose=verbose,
                                     unit_name="iteration")
                     if verbose else None)
    self._epoch = 0
    self._logs = {}
    history.evaluations = []
    model.stop_training = False
    self._callbacks.on_train_begin()
    self._callbacks.on_epoch_begin(0)

  def __call__(self, progress):
    self._history.evaluations.append(int(progress.nfev))
    logs = {"loss": float(progress.fun)}
    logs.update(self._extra_logs())
    epoch = self._epoch
    self._callbacks.on_epoch_end(epoch, logs)
    self._logs = logs
    self._epoch = epoch + 1
    if self._progbar is not None:
      # Show the values at the iterate, not running averages.
      self._progbar.stateful_metrics = set(logs)
      self._progbar.update(epoch + 1, [(k, v) for k, v in logs.items()])
    if _distribute.any_worker(self._strategy,
                              getattr(self._model, "stop_training", False)):
      raise StopIteration
    self._callbacks.on_epoch_begin(epoch + 1)

  def end(self, result):
    """Closes the run; returns the `History` with `result` attached."""
    if self._progbar is not None and self._epoch < self._max_iterations:
      # Ended early (converged or stopped): close the bar where it stands.
      self._progbar.target = self._epoch
      self._progbar.update(self._epoch, finalize=True)
    self._callbacks.on_train_end(self._logs)
    self._history.result = result
    self._model.history = self._history
    return self._history


def fit(model, x=None, y=None, batch_size=None, sample_weight=None,
        validation_data=None, callbacks=None, verbose=1, method="lbfgs",
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
    sample_weight: Optional per-sample weights (None with a dataset).
    validation_data: Optional `(x_val, y_val)` or `(x_val, y_val, sw)`
      tuple or dataset; `val_` metrics are logged each iteration.
    callbacks: List of Keras callbacks (of the model's Keras package), or
      one callback. Each
      iteration is one epoch. `model.stop_training = True` ends the run.
    verbose: 0 silent, 1 progress bar over iterations, 2 one line per
      iteration.
    method: `'lbfgs'` (on-device `LbfgsOptimizerInterface`) or a
      `scipy.optimize.minimize` method name (`ScipyOptimizerInterface`).
    max_iterations: Maximum number of iterations (SciPy: `maxiter`).
    loss: Optional Keras loss (name, `Loss` or `fn(y_true, y_pred)`)
      replacing the compiled loss; `model.losses` are still added.
    jit_compile: Compile the objective (and, for `'lbfgs'`, the solver)
      with XLA. Only for in-memory data without `batch_size`, and not for a
      model distributed over several replicas.
    **options: Method options: `lbfgs_minimize` options for `'lbfgs'`
      (`tolerance`, `num_correction_pairs`, `dtype`, ...); for SciPy
      methods, `options={...}` (merged with `maxiter`) and other
      `scipy.optimize.minimize` keywords (`tol`).

  Returns:
    The `History` callback: `history.history['loss']` has one entry per
    iteration; `history.evaluations[i]` is the number of objective
    evaluations (loss and gradient over the full data) made by the end of
    iteration `i`; `history.result` is the optimizer's `OptimizeResult`
    (None when `max_iterations=0`).

  Raises:
    TypeError: `model` is not a Keras model, `loss` is not a loss, or
      `callbacks` is not a list of callbacks.
    ValueError: An uncompiled model without `loss=`, an infinite or empty
      dataset, empty arrays, `x`/`y`/`sample_weight` with different numbers
      of samples, a model without trainable variables, a bad argument, a
      model built under a strategy that cannot be used (see
      `LbfgsOptimizerInterface`'s `distribute_strategy`).
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
    raise ValueError("method must be 'lbfgs' or a SciPy method name; got %r."
                     % (method,))
  if loss is not None:
    batch_loss = _override_loss_fn(model, K, loss)
  else:
    batch_loss = _compiled_loss_fn(model, K)
    if batch_loss is None:
      raise ValueError(
          "The model has no loss: compile it with a loss "
          "(model.compile(loss=...)) or pass loss= to tf_extopt.keras.fit.")
  x_t, y_t, sw_t, dataset = _make_data(x, y, sample_weight, batch_size)
  if jit_compile and dataset is not None:
    raise ValueError("jit_compile=True needs in-memory data without "
                     "batch_size (tf.data cannot be XLA-compiled).")
  if not model.trainable_variables and not model.built and x_t is not None:
    model(x_t)  # Build it, as Keras' fit would.
  if not model.trainable_variables:
    raise ValueError("The model has no trainable variables (is it built, "
                     "and are its layers trainable?); nothing to fit.")
  variables = _packing.resolve_var_list(model, "model")
  strategy = _distribute.resolve_strategy(variables, None, False,
                                          jit_compile)
  objective = _Objective(model, batch_loss, variables, x_t, y_t, sw_t,
                         dataset)
  if strategy is not None:
    objective = objective.replica_loss(strategy)

  options = dict(options)  # Never mutate the caller's dicts.
  if method.lower() == "lbfgs":
    if "max_iterations" in options or "iterations_per_call" in options:
      raise ValueError("Pass max_iterations as fit's own argument; "
                       "iterations_per_call is fixed to 1 (one epoch per "
                       "iteration).")
    opt = LbfgsOptimizerInterface(objective, model,
                                  max_iterations=max_iterations,
                                  iterations_per_call=1,
                                  jit_compile=jit_compile, **options)
  else:
    scipy_options = dict(options.pop("options", None) or {})
    scipy_options.setdefault("maxiter", max_iterations)
    opt = ScipyOptimizerInterface(objective, model, method=method,
                                  options=scipy_options,
                                  jit_compile=jit_compile, **options)

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
    if validation_data is not None:
      if isinstance(validation_data, tf.data.Dataset):
        values = model.evaluate(validation_data, verbose=0, return_dict=True)
      else:
        vx, vy, vsw = _unpack_batch(tuple(validation_data))
        values = model.evaluate(vx, vy, sample_weight=vsw, verbose=0,
                                return_dict=True)
      logs.update({"val_" + k: float(v) for k, v in values.items()})
    return logs

  epochs = _Epochs(K, model, callbacks, verbose, max_iterations, extra_logs,
                   strategy)
  result = opt.minimize(progress_callback=epochs) if max_iterations else None
  return epochs.end(result)
