"""Problems shared by several benchmarks: the Keras MLP and the examples.

`make_problem` is the Keras 3 MLP of `scipy_interface_bench.py`,
`keras_bench.py`, `best_point_bench.py` and `time_to_loss.py`, so their
tables describe the same models. `load_example` imports a script from
`examples/` as a module (they are not a package), so benchmarks reuse the
examples' own problem builders instead of copies.
"""

import importlib.util
import os

import numpy as np
import tensorflow as tf
import keras

_EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                         "examples")
FEATURES = 8


def load_example(name):
  """`examples/<name>.py`, imported as a module."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(_EXAMPLES, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def make_data(samples, seed=0):
  """`(x, y)` float32 tensors: `FEATURES` normal inputs, a noisy sine sum."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(samples, FEATURES)).astype(np.float32)
  y = (np.sin(x).sum(axis=1, keepdims=True)
       + 0.1 * rng.normal(size=(samples, 1))).astype(np.float32)
  return tf.constant(x), tf.constant(y)


def make_mlp(width, seed=0):
  """An uncompiled `FEATURES`-width-width-1 tanh Keras 3 MLP."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((FEATURES,)),
      keras.layers.Dense(width, activation="tanh"),
      keras.layers.Dense(width, activation="tanh"),
      keras.layers.Dense(1),
  ])


def make_problem(samples, width, seed=0):
  """The MLP, its full-batch MSE and its variables.

  Returns:
    `(model, loss_fn, tf_vars, initial)`: `loss_fn()` is the mean squared
    error over all `samples`; `tf_vars` are the model's trainable variables
    unwrapped to `tf.Variable`s (gpflow rejects `keras.Variable`), and
    `initial` their starting values.
  """
  x, y = make_data(samples, seed)
  model = make_mlp(width, seed)

  def loss_fn():
    return tf.reduce_mean(tf.square(model(x) - y))

  tf_vars = [getattr(v, "_value", v) for v in model.trainable_variables]
  initial = [v.numpy() for v in tf_vars]
  return model, loss_fn, tf_vars, initial
