"""tf_extopt.keras.fit on Keras 3 and tf_keras models, both methods.

References: the same objective minimized through `LbfgsOptimizerInterface` /
`ScipyOptimizerInterface` directly, losses recomputed at the final weights,
and `model.evaluate`.
"""

import csv
import os
import warnings

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import keras
import tf_extopt
from tf_extopt import keras as tfk_fit
from tf_extopt import lbfgs_interface
from tf_extopt.keras import _Objective
from tf_extopt.keras import _compiled_loss_fn

tf_keras = pytest.importorskip("tf_keras")

# The tests below run the on-device solver unless they name a method;
# `method='auto'`, the default, is tested on its own at the end.
def _fit(*args, **kwargs):
  kwargs.setdefault("method", "lbfgs")
  return tf_extopt.keras.fit(*args, **kwargs)


_N = 48


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(_N, 2)).astype(np.float32)
  y = (np.sin(2 * x[:, :1]) + 0.5 * x[:, 1:] ** 2
       + 0.05 * rng.normal(size=(_N, 1))).astype(np.float32)
  sw = rng.uniform(0.5, 2.0, size=(_N,)).astype(np.float32)
  return x, y, sw


def _keras3_model(regularizer=None, metrics=None, compile_loss="mse",
                  seed=3):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((2,)),
      keras.layers.Dense(6, activation="tanh",
                         kernel_regularizer=regularizer),
      keras.layers.Dense(1),
  ])
  if compile_loss is not None:
    model.compile(optimizer="adam", loss=compile_loss, metrics=metrics)
  return model


def _tf_keras_model(seed=3):
  tf_keras.utils.set_random_seed(seed)
  model = tf_keras.Sequential([
      tf_keras.layers.Dense(6, activation="tanh", input_shape=(2,),
                            kernel_regularizer=tf_keras.regularizers.L2(1e-3)),
      tf_keras.layers.Dense(1),
  ])
  model.compile(optimizer="adam", loss="mse")
  return model


def _mse_plus_losses(model, x, y):
  loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
  return float(loss + tf.add_n(model.losses) if model.losses else loss)


def _weights(model):
  return [w.copy() for w in model.get_weights()]


def _assert_weights_close(a, b, atol):
  for wa, wb in zip(a, b):
    np.testing.assert_allclose(wa, wb, atol=atol)


# --- Both methods, both Keras packages ------------------------------------------


def test_keras3_lbfgs_follows_the_interface(data):
  x, y, _ = data
  model = _keras3_model()
  initial = _weights(model)
  history = _fit(model, x, y, max_iterations=8, verbose=0,
                 tolerance=0.)
  assert isinstance(history, keras.callbacks.History)
  assert model.history is history
  result = history.result
  assert result.nit == 8
  assert len(history.history["loss"]) == 8 == len(history.epoch)
  fitted = _weights(model)
  assert history.history["loss"][-1] == pytest.approx(
      _mse_plus_losses(model, x, y), rel=1e-5)
  # Reference: the interface on the same objective, from the same weights.
  # The data are captured tensors, as fit's are: numpy arrays would become
  # graph constants, which Grappler folds differently, and float32 rounding
  # differences grow over 8 iterations to above atol.
  model.set_weights(initial)
  xt, yt = tf.constant(x), tf.constant(y)
  opt = tf_extopt.LbfgsOptimizerInterface(
      lambda: model.compute_loss(x=xt, y=yt, y_pred=model(xt, training=True),
                                 training=True),
      model, max_iterations=8, tolerance=0.)
  reference = opt.minimize()
  _assert_weights_close(fitted, _weights(model), atol=1e-5)
  assert result.fun == pytest.approx(reference.fun, rel=1e-5)
  losses = history.history["loss"]
  assert all(b <= a for a, b in zip(losses, losses[1:]))
  assert len(history.evaluations) == 8
  assert history.evaluations[-1] == result.nfev == reference.nfev
  assert all(b > a for a, b in zip(history.evaluations,
                                   history.evaluations[1:]))


def test_keras3_scipy_method_follows_the_interface(data):
  x, y, _ = data
  model = _keras3_model(regularizer=keras.regularizers.L2(1e-3))
  initial = _weights(model)
  callbacks = []
  history = _fit(model, x, y, method="L-BFGS-B",
                 max_iterations=6, verbose=0,
                 callbacks=callbacks)
  assert callbacks == []  # The caller's list is not changed.
  assert len(history.history["loss"]) == history.result.nit == 6
  assert len(history.evaluations) == 6
  assert history.evaluations[-1] <= history.result.nfev
  assert history.history["loss"][-1] == pytest.approx(
      _mse_plus_losses(model, x, y), rel=1e-5)
  fitted = _weights(model)
  model.set_weights(initial)
  tf_extopt.ScipyOptimizerInterface(
      lambda: _objective_value(model, x, y), model,
      options={"maxiter": 6}).minimize()
  _assert_weights_close(fitted, _weights(model), atol=1e-5)


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS"])
def test_scipy_method_adds_no_evaluation(data, method):
  """fit's SciPy path evaluates as often as the interface on its own: the
  loss given to callbacks comes from SciPy's `intermediate_result`, not from
  an extra evaluation per iteration."""
  x, y, _ = data
  counter = tf.Variable(0, dtype=tf.int64)

  def counting_mse(y_true, y_pred):
    counter.assign_add(1)
    return tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)

  model = _keras3_model(compile_loss=None)
  initial = _weights(model)
  history = _fit(model, x, y, method=method, max_iterations=5,
                 loss=counting_mse, verbose=0)
  fit_count = int(counter.numpy())
  assert fit_count == history.result.nfev == history.evaluations[-1]
  assert len(history.history["loss"]) == history.result.nit
  assert history.history["loss"][-1] == pytest.approx(
      _mse_plus_losses(model, x, y), rel=1e-5)
  model.set_weights(initial)
  counter.assign(0)
  xt, yt = tf.constant(x), tf.constant(y)
  reference = tf_extopt.ScipyOptimizerInterface(
      lambda: tf.reduce_mean(counting_mse(yt, model(xt, training=True))),
      model, method=method, options={"maxiter": 5}).minimize()
  assert int(counter.numpy()) == reference.nfev == fit_count


def _objective_value(model, x, y):
  loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
  return loss + tf.add_n(model.losses)


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_tf_keras_model(data, method):
  x, y, _ = data
  model = _tf_keras_model()
  before = _mse_plus_losses(model, x, y)
  history = tfk_fit.fit(model, x, y, method=method, max_iterations=6,
                        verbose=0)
  assert isinstance(history, tf_keras.callbacks.History)
  assert len(history.history["loss"]) == history.result.nit
  assert history.history["loss"][-1] == pytest.approx(
      _mse_plus_losses(model, x, y), rel=1e-5)
  assert history.history["loss"][-1] < before


# --- The objective -----------------------------------------------------------------


def _value_and_grads(objective, variables):
  with tf.GradientTape() as tape:
    value = objective()
  return float(value), [g.numpy() for g in tape.gradient(value, variables)]


def test_dataset_and_batched_objectives_equal_array_objective(data):
  x, y, sw = data
  model = _keras3_model(regularizer=keras.regularizers.L2(1e-2))
  variables = tfk_fit._packing.resolve_var_list(model)  # pylint: disable=protected-access
  batch_loss = _compiled_loss_fn(model, keras)
  whole = _Objective(model, batch_loss, variables, tf.constant(x),
                     tf.constant(y), tf.constant(sw), None)
  f0, g0 = _value_and_grads(whole, variables)
  # Uneven batches (48 = 20 + 20 + 8): weighted by their sample counts.
  for dataset in (
      tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(20),
      tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(7),
  ):
    split = _Objective(model, batch_loss, variables, None, None, None,
                       dataset)
    f1, g1 = _value_and_grads(split, variables)
    assert f1 == pytest.approx(f0, rel=1e-5)
    for a, b in zip(g0, g1):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fit_on_dataset_equals_fit_on_arrays(data):
  x, y, sw = data
  model = _keras3_model()
  initial = _weights(model)
  on_arrays = _fit(model, x, y, sample_weight=sw,
                   max_iterations=5, verbose=0)
  after_arrays = _weights(model)
  model.set_weights(initial)
  dataset = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(20)
  on_dataset = _fit(model, dataset, max_iterations=5,
                    verbose=0)
  np.testing.assert_allclose(on_dataset.history["loss"],
                             on_arrays.history["loss"], rtol=1e-4)
  _assert_weights_close(after_arrays, _weights(model), atol=1e-4)
  model.set_weights(initial)
  with_batch_size = _fit(model, x, y, sample_weight=sw,
                         batch_size=20, max_iterations=5,
                         verbose=0)
  np.testing.assert_allclose(with_batch_size.history["loss"],
                             on_arrays.history["loss"], rtol=1e-4)


def test_loss_override_and_metrics_and_validation(data):
  x, y, _ = data
  model = _keras3_model(metrics=["mae"])
  history = _fit(model, x, y, loss="mae", max_iterations=4,
                 validation_data=(x[:16], y[:16]), verbose=0)
  logs = history.history
  assert set(logs) == {"loss", "mae", "val_loss", "val_mae"}
  assert all(len(v) == 4 for v in logs.values())
  mae = float(tf.reduce_mean(tf.abs(model(x) - y)))
  assert logs["loss"][-1] == pytest.approx(mae, rel=1e-5)
  assert logs["mae"][-1] == pytest.approx(mae, rel=1e-5)
  evaluated = model.evaluate(x[:16], y[:16], verbose=0, return_dict=True)
  assert logs["val_mae"][-1] == pytest.approx(evaluated["mae"], rel=1e-5)
  # val_loss is the compiled loss (mse), as model.evaluate reports it.
  assert logs["val_loss"][-1] == pytest.approx(evaluated["loss"], rel=1e-5)


def test_batchnorm_and_dropout_run_in_training_mode(data):
  x, y, _ = data
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((2,)), keras.layers.Dense(6),
      keras.layers.BatchNormalization(), keras.layers.Activation("tanh"),
      keras.layers.Dropout(0.2), keras.layers.Dense(1)])
  model.compile(loss="mse")
  bn = model.layers[1]
  history = _fit(model, x, y, max_iterations=3, verbose=0)
  assert len(history.history["loss"]) >= 1
  assert np.isfinite(history.history["loss"]).all()
  # Training mode: the moving statistics moved away from their init.
  assert np.abs(bn.moving_mean.numpy()).max() > 0


# --- Callbacks and progress ------------------------------------------------------


class _StopAt(keras.callbacks.Callback):

  def __init__(self, epoch):
    super().__init__()
    self.at = epoch
    self.begun = []

  def on_epoch_begin(self, epoch, logs=None):
    self.begun.append(epoch)

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.at:
      self.model.stop_training = True


def test_keras3_callbacks(data, tmp_path):
  x, y, _ = data
  model = _keras3_model()
  ckpt = tmp_path / "best.weights.h5"
  csv_path = tmp_path / "log.csv"
  logdir = tmp_path / "tb"
  stop = _StopAt(2)
  callbacks = [keras.callbacks.ModelCheckpoint(str(ckpt),
                                               save_weights_only=True,
                                               monitor="loss"),
               keras.callbacks.CSVLogger(str(csv_path)),
               keras.callbacks.TerminateOnNaN(),
               keras.callbacks.TensorBoard(str(logdir)), stop]
  history = _fit(model, x, y, max_iterations=10, verbose=0,
                 callbacks=callbacks)
  assert len(history.history["loss"]) == 3
  assert stop.begun == [0, 1, 2]
  assert history.result.status == 99
  assert ckpt.exists()
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
  np.testing.assert_allclose([float(r["loss"]) for r in rows],
                             history.history["loss"], rtol=1e-6)
  # TensorBoard wrote its event files (tensorboard is in the `test` extra).
  assert any(files for _, _, files in os.walk(logdir))
  # The weights at the stop are the checkpointed (last, best) ones.
  fitted = _weights(model)
  model.load_weights(str(ckpt))
  _assert_weights_close(fitted, _weights(model), atol=0)


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_early_stopping(data, package):
  x, y, _ = data
  module = keras if package == "keras" else tf_keras
  model = _keras3_model() if package == "keras" else _tf_keras_model()
  # No improvement is ever large enough: stops after patience + 1 epochs.
  early = module.callbacks.EarlyStopping(monitor="loss", patience=1,
                                         min_delta=1e6)
  history = _fit(model, x, y, max_iterations=10, verbose=0,
                 callbacks=[early])
  assert len(history.history["loss"]) == 2
  assert early.stopped_epoch == 1
  assert history.result.status == 99


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_early_stop_inside_a_chunk_leaves_that_iterations_weights(data,
                                                                  package):
  """The run goes in compiled chunks whose epochs are replayed afterwards;
  a stop at epoch 2 of a longer chunk leaves the weights (and result) of
  iteration 2, those of a run of two iterations."""
  x, y, _ = data
  module = keras if package == "keras" else tf_keras
  make = _keras3_model if package == "keras" else _tf_keras_model
  model = make()
  initial = _weights(model)
  early = module.callbacks.EarlyStopping(monitor="loss", patience=1,
                                         min_delta=1e6)
  history = _fit(model, x, y, max_iterations=20, verbose=0,
                 callbacks=[early], tolerance=0.)
  stopped = _weights(model)
  assert history.result.nit == 2 and history.result.status == 99
  model.set_weights(initial)
  two = _fit(model, x, y, max_iterations=2, verbose=0,
             tolerance=0.)
  _assert_weights_close(stopped, _weights(model), atol=0)
  assert history.history["loss"] == two.history["loss"]
  assert history.result.fun == two.result.fun


def test_compiled_calls_do_not_grow_with_iterations(data, monkeypatch):
  """Without callbacks that need each iteration on the host, the on-device
  fit runs its iterations in one compiled call (up to the first chunk's
  length), and replays the epochs from the call's record."""
  x, y, _ = data
  calls = []
  original = lbfgs_interface._Chunks.next_target

  def counted(self, done):
    calls.append(done)
    return original(self, done)

  monkeypatch.setattr(lbfgs_interface._Chunks, "next_target", counted)
  counts = []
  for iterations in (1, 30):
    calls.clear()
    history = _fit(
        _keras3_model(), x, y, max_iterations=iterations, verbose=0,
        tolerance=0., callbacks=[keras.callbacks.EarlyStopping("loss")])
    assert len(history.history["loss"]) == iterations
    counts.append(len(calls))
  assert counts == [1, 1]


def test_default_makes_about_one_evaluation_per_iteration(data):
  """Wolfe steps by default (`exact_line_search=False`): about one
  evaluation per iteration on a small network, as SciPy's L-BFGS-B."""
  x, y, _ = data
  keras.utils.set_random_seed(5)
  model = keras.Sequential([keras.Input((2,)),
                            keras.layers.Dense(16, activation="tanh"),
                            keras.layers.Dense(16, activation="tanh"),
                            keras.layers.Dense(1)])
  model.compile(loss="mse")
  history = _fit(model, x, y, max_iterations=100, verbose=0,
                 tolerance=0.)
  result = history.result
  assert result.nit == 100
  assert result.nfev <= 1.2 * result.nit
  near_exact = _fit(model, x, y, max_iterations=10,
                    verbose=0, tolerance=0.,
                    exact_line_search=None).result
  assert near_exact.nfev >= 1.5 * near_exact.nit  # the option reaches it


def test_progress_bar(data, capsys):
  x, y, _ = data
  model = _keras3_model()
  _fit(model, x, y, max_iterations=3, verbose=1,
       tolerance=0.)
  out = capsys.readouterr().out
  assert "3/3" in out and "loss:" in out and "iteration" in out


def test_adam_then_lbfgs(data):
  x, y, _ = data
  model = _keras3_model()
  model.fit(x, y, epochs=5, batch_size=_N, verbose=0)
  after_adam = _mse_plus_losses(model, x, y)
  history = _fit(model, x, y, max_iterations=10, verbose=0)
  assert history.history["loss"][0] < after_adam
  assert _mse_plus_losses(model, x, y) < after_adam


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_nan_loss_keeps_best_finite_weights(data, method):
  x, y, _ = data

  def loss(y_true, y_pred):
    # NaN once the predictions' mean square exceeds 0.6, which the data
    # pulls them towards.
    return (tf.reduce_mean(tf.square(y_true - y_pred))
            + tf.sqrt(0.6 - tf.reduce_mean(tf.square(y_pred))))

  model = _keras3_model(compile_loss=None)
  for w in model.trainable_variables:
    w.assign(w * 0.1)
  initial = float(loss(3. * y, model(x)))
  history = _fit(
      model, x, 3. * y, loss=loss, method=method, max_iterations=15,
      verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
  losses = history.history.get("loss", [])
  assert np.isfinite(losses).all()
  for w in model.get_weights():
    assert np.isfinite(w).all()
  final = float(loss(3. * y, model(x)))
  assert np.isfinite(final) and final <= initial
  # The weights are the best point: SciPy may give up at its first NaN
  # (no iteration logged); L-BFGS here backs off and keeps going.
  assert final == pytest.approx(min(losses + [initial]), rel=1e-5)
  if method == "lbfgs":
    assert losses


def test_max_iterations_zero_changes_nothing(data):
  x, y, _ = data
  model = _keras3_model()
  before = _weights(model)
  history = _fit(model, x, y, max_iterations=0, verbose=0)
  assert history.history == {} and history.result is None
  _assert_weights_close(before, _weights(model), atol=0)


@pytest.mark.slow
def test_jit_compile(data):
  x, y, _ = data
  model = _keras3_model()
  initial = _weights(model)
  plain = _fit(model, x, y, max_iterations=5, verbose=0)
  model.set_weights(initial)
  jit = _fit(model, x, y, max_iterations=5, verbose=0,
             jit_compile=True)
  np.testing.assert_allclose(jit.history["loss"], plain.history["loss"],
                             rtol=1e-3)


# --- Errors ---------------------------------------------------------------------


def test_errors(data):
  x, y, _ = data
  with pytest.raises(ValueError, match="no loss.*loss="):
    _fit(_keras3_model(compile_loss=None), x, y)
  model = _keras3_model()
  infinite = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
  with pytest.raises(ValueError, match="infinite"):
    _fit(model, infinite)
  with pytest.raises(ValueError, match="y and sample_weight must be None"):
    _fit(model, tf.data.Dataset.from_tensor_slices((x, y)),
         y)
  with pytest.raises(ValueError, match="jit_compile"):
    _fit(model, x, y, batch_size=8, jit_compile=True)
  with pytest.raises(ValueError, match="batch_size.*0"):
    _fit(model, x, y, batch_size=0)
  with pytest.raises(ValueError, match="max_iterations.*-1"):
    _fit(model, x, y, max_iterations=-1)
  with pytest.raises(TypeError,
                     match="`batch_size` must be a Python integer >= 1"):
    _fit(model, x, y, batch_size=2.5)
  with pytest.raises(TypeError,
                     match="`max_iterations` must be a Python integer >= 0"):
    _fit(model, x, y, max_iterations="3")
  with pytest.raises(ValueError, match="verbose"):
    _fit(model, x, y, verbose=5)
  with pytest.raises(ValueError, match="method"):
    _fit(model, x, y, method=None)
  with pytest.raises(ValueError, match="not a scipy.optimize.minimize"):
    _fit(model, x, y, method="adam")
  with pytest.raises(TypeError, match="model must be a Keras"):
    _fit(object(), x, y)
  frozen = _keras3_model()
  frozen.trainable = False
  with pytest.raises(ValueError, match="no trainable variables"):
    _fit(frozen, x, y)
  with pytest.raises(ValueError, match="unknown option"):
    _fit(model, x, y, maxiter=3)


# --- Weight constraints ---------------------------------------------------------


def _constrained_data():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(40, 4)).astype(np.float32)
  y = (x @ np.array([[1.], [-2.], [0.5], [3.]], np.float32) + 0.25).astype(
      np.float32)
  return x, y


def _constrained_fit(module, constraint, method, **kwargs):
  """A linear model with `kernel_constraint`, fitted; returns its weights."""
  x, y = _constrained_data()
  module.utils.set_random_seed(0)
  if module is keras:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        1, kernel_constraint=constraint)])
  else:
    model = module.Sequential([module.layers.Dense(
        1, input_shape=(4,), kernel_constraint=constraint)])
  model.compile(loss="mse")
  history = _fit(model, x, y, method=method,
                 max_iterations=200, verbose=0, **kwargs)
  kernel, bias = model.get_weights()
  return history, kernel.ravel(), float(bias[0])


def _box_least_squares(low, high):
  """The exact least-squares fit with the kernel in [low, high]."""
  x, y = _constrained_data()
  design = np.concatenate([x, np.ones([len(x), 1])], axis=1).astype(
      np.float64)
  solution = scipy.optimize.lsq_linear(
      design, y[:, 0].astype(np.float64),
      bounds=([low] * 4 + [-np.inf], [high] * 4 + [np.inf]), tol=1e-12)
  return solution.x[:4], solution.x[4]


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_nonneg_constraint_is_a_bound(package, method):
  module = keras if package == "keras" else tf_keras
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    history, kernel, bias = _constrained_fit(
        module, module.constraints.NonNeg(), method)
  # Applied as bounds, so the interface has nothing to warn about.
  assert not [w for w in record if "own constraints" in str(w.message)]
  assert (kernel >= 0).all()
  expected_kernel, expected_bias = _box_least_squares(0., np.inf)
  assert expected_kernel[1] < 1e-12  # The constraint is active.
  np.testing.assert_allclose(kernel, expected_kernel, atol=2e-3)
  assert bias == pytest.approx(expected_bias, abs=2e-3)
  assert len(history.history["loss"]) >= 1


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_constraint_bounds_merge_with_var_to_bounds(method):
  x, y = _constrained_data()
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
      1, kernel_constraint=keras.constraints.NonNeg())])
  model.compile(loss="mse")
  kernel = model.trainable_variables[0]
  bounds = [(kernel, (None, 0.75))]
  _fit(model, x, y, method=method, max_iterations=200,
       verbose=0, var_to_bounds=bounds)
  assert bounds == [(kernel, (None, 0.75))]  # The caller's list is kept.
  expected_kernel, _ = _box_least_squares(0., 0.75)
  np.testing.assert_allclose(model.get_weights()[0].ravel(), expected_kernel,
                             atol=2e-3)


def test_max_norm_over_single_elements_is_a_box():
  # A (4, 1) kernel's norm over axis 1 is each element's absolute value.
  _, kernel, _ = _constrained_fit(
      keras, keras.constraints.MaxNorm(0.75, axis=1), "lbfgs")
  expected_kernel, _ = _box_least_squares(-0.75, 0.75)
  np.testing.assert_allclose(kernel, expected_kernel, atol=2e-3)


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
@pytest.mark.parametrize("constraint, match", [
    (keras.constraints.UnitNorm(), "constraint UnitNorm, which L-BFGS cannot "
     "honour"),
    # Over axis 0 the norm is of the whole column: not a box.
    (keras.constraints.MaxNorm(1., axis=0), "constraint MaxNorm, which "
     "L-BFGS cannot honour"),
    (keras.constraints.MinMaxNorm(0.5, 1., axis=1), "constraint MinMaxNorm, "
     "which L-BFGS cannot honour"),
])
def test_constraints_that_are_not_bounds_are_refused(constraint, match,
                                                     method):
  with pytest.raises(ValueError, match="Variable '.*kernel.*' has the " +
                     match):
    _constrained_fit(keras, constraint, method)


def test_bound_constraint_needs_a_method_with_bounds():
  with pytest.raises(ValueError, match="constraint NonNeg, which fit turns "
                     "into bounds, but method='BFGS' cannot take bounds"):
    _constrained_fit(keras, keras.constraints.NonNeg(), "BFGS")


# --- Callbacks that change the weights or the learning rate ---------------------


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_restored_weights_are_the_result(data, method):
  """`EarlyStopping(restore_best_weights=True)` restores the weights of its
  best epoch when training ends; `history.result` then describes those."""
  x, y, _ = data
  model = _keras3_model()
  # The validation targets are the opposite of the training ones: val_loss
  # is lowest after the first iteration and then rises.
  early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                        restore_best_weights=True)
  history = _fit(model, x, y, validation_data=(x, -y),
                 callbacks=[early], method=method,
                 max_iterations=10, verbose=0)
  val = history.history["val_loss"]
  best = int(np.argmin(val))
  assert best < len(val) - 1  # Restored: not the last iterate.
  result = history.result
  assert result.status == 97 and not result.success
  assert result.optimizer_status == 99  # Stopped by EarlyStopping.
  assert "restore_best_weights" in result.message
  # x is what the model holds, fun and jac are the training loss there.
  packed = np.concatenate([w.ravel() for w in _weights_of(model)])
  np.testing.assert_allclose(result.x, packed, rtol=1e-6)
  assert result.fun == pytest.approx(_mse_plus_losses(model, x, y),
                                     rel=1e-5)
  assert result.fun == pytest.approx(history.history["loss"][best],
                                     rel=1e-5)
  with tf.GradientTape() as tape:
    value = tf.reduce_mean(tf.square(model(x, training=True) - y))
  gradient = np.concatenate([g.numpy().ravel() for g in tape.gradient(
      value, model.trainable_variables)])
  np.testing.assert_allclose(result.jac, gradient, rtol=1e-3, atol=1e-6)


def _weights_of(model):
  return [v.numpy() for v in model.trainable_variables]


def test_result_kept_when_no_callback_moves_the_weights(data):
  x, y, _ = data
  model = _keras3_model()
  early = keras.callbacks.EarlyStopping(monitor="loss",
                                        restore_best_weights=True)
  history = _fit(model, x, y, callbacks=[early],
                 max_iterations=4, verbose=0, tolerance=0.)
  # The loss only decreases, so the best epoch is the last: nothing moves.
  assert history.result.status == 1
  assert history.result.fun == history.history["loss"][-1]


@pytest.mark.parametrize("name, make", [
    ("ReduceLROnPlateau", lambda: keras.callbacks.ReduceLROnPlateau("loss")),
    ("LearningRateScheduler",
     lambda: keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr)),
])
def test_learning_rate_callbacks_warn(data, name, make):
  x, y, _ = data
  model = _keras3_model()
  with pytest.warns(UserWarning, match=name + " sets model.optimizer's "
                    "learning rate, which L-BFGS does not use"):
    _fit(model, x, y, max_iterations=1, verbose=0,
         callbacks=[make()])


# --- Epochs and progress --------------------------------------------------------


class _Events(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.events = []

  def on_epoch_begin(self, epoch, logs=None):
    self.events.append(("begin", epoch))

  def on_epoch_end(self, epoch, logs=None):
    self.events.append(("end", epoch))


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_every_epoch_begun_is_ended(data, method):
  x, y, _ = data
  events = _Events()
  history = _fit(_keras3_model(), x, y, method=method,
                 max_iterations=3, verbose=0,
                 callbacks=[events])
  assert len(history.history["loss"]) == 3
  assert events.events == [(kind, epoch) for epoch in range(3)
                           for kind in ("begin", "end")]
  # Converged at the start: no iteration, so no epoch at all.
  events = _Events()
  history = _fit(_keras3_model(), x, y, method=method,
                 max_iterations=3, verbose=0,
                 callbacks=[events],
                 **({"tolerance": 1e9} if method == "lbfgs"
                    else {"options": {"gtol": 1e9}}))
  assert history.result.nit == 0 and history.result.success
  assert events.events == []


def test_verbose_2_prints_one_line_per_iteration(data, capsys):
  x, y, _ = data
  _fit(_keras3_model(), x, y, max_iterations=3, verbose=2,
       tolerance=0.)
  lines = [l for l in capsys.readouterr().out.splitlines()
           if "/iteration" in l]
  assert [l.split(" - ")[0].strip() for l in lines] == ["1/3", "2/3", "3/3"]
  assert all("loss:" in l for l in lines)


def test_tnc_stops_after_max_iterations(data):
  """TNC has no iteration limit of its own (its old `maxiter` counted
  evaluations); fit stops it after `max_iterations` iterations."""
  x, y, _ = data
  with warnings.catch_warnings():
    # No option renamed by us or unknown to SciPy.
    warnings.simplefilter("error", FutureWarning)
    warnings.simplefilter("error", scipy.optimize.OptimizeWarning)
    history = _fit(_keras3_model(), x, y, method="TNC",
                   max_iterations=3, verbose=0)
  assert len(history.history["loss"]) == 3


# --- method='auto' ---------------------------------------------------------


def test_auto_takes_scipy_for_short_runs_on_a_cpu(data):
  """The default: a short run on a CPU is SciPy's L-BFGS-B, the very run
  `method='L-BFGS-B'` makes."""
  x, y, _ = data
  model = _keras3_model()
  initial = _weights(model)
  auto = tf_extopt.keras.fit(model, x, y, max_iterations=6, verbose=0)
  assert auto.result.method == "L-BFGS-B"
  after_auto = _weights(model)
  model.set_weights(initial)
  scipy_run = tf_extopt.keras.fit(model, x, y, method="L-BFGS-B",
                                  max_iterations=6, verbose=0)
  assert scipy_run.result.method == "L-BFGS-B"
  assert auto.history["loss"] == scipy_run.history["loss"]
  assert auto.evaluations == scipy_run.evaluations
  _assert_weights_close(after_auto, _weights(model), atol=0)


def test_auto_runs_long_fits_on_the_device(data):
  x, y, _ = data
  model = _keras3_model()
  history = tf_extopt.keras.fit(
      model, x, y, max_iterations=tfk_fit.AUTO_ON_DEVICE_ITERATIONS,
      verbose=0)
  assert history.result.method == "lbfgs"
  assert "lbfgs_results" in history.result


@pytest.mark.parametrize("options, expected", [
    ({}, "L-BFGS-B"),
    ({"var_to_bounds": None}, "L-BFGS-B"),
    ({"tolerance": 1e-6}, "lbfgs"),
    ({"num_correction_pairs": 5}, "lbfgs"),
    ({"options": {"gtol": 1e-6}}, "L-BFGS-B"),
    ({"tol": 1e-6}, "L-BFGS-B"),
])
def test_auto_follows_the_options_given(options, expected):
  given = dict(options)
  assert tfk_fit._auto_method(given, 10, False, None) == expected
  assert given == options  # Not modified.


def test_auto_runs_on_the_device_where_only_it_gives_what_was_asked():
  short = dict(options={}, max_iterations=10, jit_compile=False,
               backup=None)
  assert tfk_fit._auto_method(**short) == "L-BFGS-B"
  assert tfk_fit._auto_method(**dict(
      short, max_iterations=tfk_fit.AUTO_ON_DEVICE_ITERATIONS)) == "lbfgs"
  assert tfk_fit._auto_method(**dict(short, jit_compile=True)) == "lbfgs"
  assert tfk_fit._auto_method(**dict(short, backup=object())) == "lbfgs"
  # The options (SciPy's) decide over the other reasons.
  assert tfk_fit._auto_method(**dict(short, options={"tol": 1e-3},
                                     jit_compile=True)) == "L-BFGS-B"


def test_auto_with_a_backup_resumes_on_the_device(data, tmp_path):
  x, y, _ = data
  backup = keras.callbacks.BackupAndRestore(str(tmp_path))
  history = tf_extopt.keras.fit(_keras3_model(), x, y, max_iterations=3,
                                verbose=0, callbacks=[backup])
  assert history.result.method == "lbfgs"
