"""Which devices TensorFlow sees: asked by both wings.

The solver lays out a few computations for a CPU's caches and skips that
where a GPU or TPU is there (`_solver/_strategies`); `keras.fit`'s
`method='auto'` runs on the device whenever one is there.
"""

import tensorflow as tf

__all__ = ["accelerator_visible"]


def accelerator_visible():
  """Whether TensorFlow sees a GPU or TPU (ops then go there by default)."""
  return bool(tf.config.list_logical_devices("GPU")
              or tf.config.list_logical_devices("TPU"))
