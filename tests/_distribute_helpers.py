"""The model and data shared by the distribution tests and their workers.

`tests/test_distribute.py` imports it, and so does each worker process of
the multi-worker test (`tests/_multi_worker.py`), so that every run starts
from the same weights and data.
"""

import contextlib

import numpy as np

import keras

NUM_SAMPLES = 45  # Odd: the replicas' shares are uneven.


def data(dtype="float32"):
  """`(x, y)`: a smooth 2-D regression problem with noise."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(NUM_SAMPLES, 2))
  y = np.sin(2 * x[:, :1]) + 0.5 * x[:, 1:] ** 2 + 0.05 * rng.normal(
      size=(NUM_SAMPLES, 1))
  return x.astype(dtype), y.astype(dtype)


@contextlib.contextmanager
def floatx(dtype):
  """Keras' floatx and dtype policy set to `dtype` inside the block.

  A float64 Keras 3 model needs both while it is built *and* while it is
  fitted: its compiled loss takes its dtype from floatx when first called
  (else the float64 loss is rounded to float32), and the layers theirs from
  the global policy (which caches floatx's value when first used). Both are
  restored afterwards.
  """
  previous = keras.config.floatx(), keras.config.dtype_policy()
  keras.config.set_floatx(dtype)
  keras.config.set_dtype_policy(dtype)
  try:
    yield
  finally:
    keras.config.set_floatx(previous[0])
    keras.config.set_dtype_policy(previous[1])


def model(seed=3):
  """A small compiled tanh MLP in floatx, with an L2 regularizer (so
  `model.losses` counts), its weights fixed by `seed`."""
  keras.utils.set_random_seed(seed)
  net = keras.Sequential([
      keras.Input((2,)),
      keras.layers.Dense(8, activation="tanh",
                         kernel_regularizer=keras.regularizers.L2(1e-3)),
      keras.layers.Dense(1),
  ])
  net.compile(loss="mse")
  return net


class StopAt(keras.callbacks.Callback):
  """Sets `stop_training` at the end of epoch `epoch`."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.epoch:
      self.model.stop_training = True
