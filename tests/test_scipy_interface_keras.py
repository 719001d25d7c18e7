"""ScipyOptimizerInterface with Keras 3 and tf_keras models.

Keras 3 variables are not `tf.Variable`s (gpflow rejects them); tf_keras
ones are. Both, and models/layers as `var_list`, must just work.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from tf_extopt import ScipyOptimizerInterface

keras = pytest.importorskip("keras")


def _linear_data(seed=0, n=64, d=3, dtype=np.float32):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(dtype)
  y = (x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3
       + 0.05 * rng.normal(size=(n, 1))).astype(dtype)
  return x, y


def _least_squares(x, y):
  design = np.concatenate([x, np.ones([len(x), 1])], axis=1).astype(np.float64)
  coef, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
  return coef[:-1], coef[-1]


def test_keras3_sequential_linear_regression_matches_lstsq():
  x, y = _linear_data()
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  assert not isinstance(model.trainable_variables[0], tf.Variable)

  def loss():
    return tf.reduce_mean(tf.square(model(x) - y))

  result = ScipyOptimizerInterface(loss, model,
                                   options={"gtol": 1e-10}).minimize()
  kernel, bias = _least_squares(x, y)
  np.testing.assert_allclose(model.layers[0].kernel.numpy(), kernel,
                             atol=1e-4)
  np.testing.assert_allclose(model.layers[0].bias.numpy(), bias, atol=1e-4)
  np.testing.assert_allclose(model(x).numpy(),
                             x @ kernel + bias, atol=1e-4)
  assert result.success


def test_keras3_mlp_fits_to_low_loss_with_mixed_var_list():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, size=(128, 2)).astype(np.float32)
  y = (np.sin(2 * x[:, :1]) * x[:, 1:]).astype(np.float32)
  keras.utils.set_random_seed(1)
  hidden = keras.layers.Dense(16, activation="tanh")
  head = keras.layers.Dense(1)
  model = keras.Sequential([keras.Input((2,)), hidden, head])

  def loss():
    return tf.reduce_mean(tf.square(model(x) - y))

  initial = float(loss())
  # A layer, a keras.Variable and (duplicate) the model itself, mixed.
  optimizer = ScipyOptimizerInterface(loss, [hidden, head.kernel, model],
                                      options={"maxiter": 300})
  result = optimizer.minimize()
  assert result.x.shape == (2 * 16 + 16 + 16 + 1,)
  assert float(loss()) < 1e-3 < initial
  np.testing.assert_allclose(float(loss()), result.fun, rtol=1e-4)


def test_keras3_bounds_on_keras_variable_and_unbuilt_model_error():
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
  x = np.linspace(-1, 1, 16).astype(np.float32)[:, None]
  y = 3. * x + 1.

  def loss():
    return tf.reduce_mean(tf.square(model(x) - y))

  kernel = model.layers[0].kernel
  ScipyOptimizerInterface(loss, model,
                          var_to_bounds=[(kernel, (None, 2.))]).minimize()
  np.testing.assert_allclose(kernel.numpy(), [[2.]], atol=1e-6)
  np.testing.assert_allclose(model.layers[0].bias.numpy(), [1.], atol=1e-5)
  with pytest.raises(ValueError, match="has no trainable variables. Build"):
    ScipyOptimizerInterface(loss, keras.Sequential([keras.layers.Dense(1)]))


def test_keras3_mixed_dtype_layers():
  x, y = _linear_data(seed=2)
  float64_layer = keras.layers.Dense(1, dtype="float64")
  float32_layer = keras.layers.Dense(1, dtype="float32")
  float64_layer.build((None, 3))
  float32_layer.build((None, 3))

  def loss():
    prediction = (tf.cast(float64_layer(x.astype(np.float64)), tf.float32)
                  + float32_layer(x))
    return tf.reduce_mean(tf.square(prediction - y))

  result = ScipyOptimizerInterface(
      loss, [float64_layer, float32_layer], options={"gtol": 1e-10}
  ).minimize()
  assert float64_layer.kernel.dtype == "float64"
  assert float32_layer.kernel.dtype == "float32"
  kernel, bias = _least_squares(x, y)
  total_kernel = (float64_layer.kernel.numpy()
                  + float32_layer.kernel.numpy().astype(np.float64))
  np.testing.assert_allclose(total_kernel, kernel, atol=1e-4)
  assert result.success


def test_tf_keras_model_fits_to_low_loss():
  tf_keras = pytest.importorskip("tf_keras")
  x, y = _linear_data(seed=3)
  tf_keras.utils.set_random_seed(3)
  model = tf_keras.Sequential([
      tf_keras.layers.Dense(8, activation="tanh", input_shape=(3,)),
      tf_keras.layers.Dense(1)])

  def loss():
    return tf.reduce_mean(tf.square(model(x) - y))

  initial = float(loss())
  result = ScipyOptimizerInterface(loss, model,
                                   options={"maxiter": 300}).minimize()
  # The noise floor of the data is 0.05**2.
  assert float(loss()) < 5e-3 < initial
  assert result.nfev > 1


def test_tf_keras_mixed_precision_autocast_variables():
  tf_keras = pytest.importorskip("tf_keras")
  x, y = _linear_data(seed=4)
  policy = tf_keras.mixed_precision.Policy("mixed_float16")
  layer = tf_keras.layers.Dense(1, dtype=policy)
  layer.build((None, 3))
  assert type(layer.kernel).__name__ == "AutoCastVariable"

  def loss():
    return tf.reduce_mean(tf.square(tf.cast(layer(x), tf.float32) - y))

  ScipyOptimizerInterface(loss, layer).minimize()
  kernel, _ = _least_squares(x, y)
  assert layer.kernel.dtype == tf.float32  # Storage dtype is kept.
  np.testing.assert_allclose(layer.kernel.numpy(), kernel, atol=5e-2)


def test_tf_module_var_list():
  module = tf.Module()
  module.w = tf.Variable([4., 4.])
  module.frozen = tf.Variable([1., 1.], trainable=False)

  def loss():
    return tf.reduce_sum(tf.square(module.w - module.frozen * 2.))

  result = ScipyOptimizerInterface(loss, module).minimize()
  assert result.x.shape == (2,)
  np.testing.assert_allclose(module.w.numpy(), [2., 2.], atol=1e-6)
  np.testing.assert_array_equal(module.frozen.numpy(), [1., 1.])


def test_variable_constraints_are_named_not_applied():
  """As in contrib, a variable's own constraint is not applied; unlike
  contrib, a warning says so, unless var_to_bounds enforces it."""
  x, y = _linear_data()
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
      1, kernel_constraint=keras.constraints.NonNeg())])
  kernel = model.trainable_variables[0]
  loss = lambda: tf.reduce_mean(tf.square(model(x) - y))
  with pytest.warns(UserWarning, match="ScipyOptimizerInterface does not "
                    "apply the variables' own constraints.*'.*kernel.*' "
                    r"\(NonNeg\)"):
    optimizer = ScipyOptimizerInterface(loss, model)
  optimizer.minimize()
  assert kernel.numpy().min() < 0  # Unconstrained, as in contrib.
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)
    bounded = ScipyOptimizerInterface(loss, model,
                                      var_to_bounds=[(kernel, (0, None))])
  bounded.minimize()
  assert kernel.numpy().min() >= 0
