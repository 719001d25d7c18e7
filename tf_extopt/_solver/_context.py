"""Where the ops being built will run: the one question the solvers ask.

Some computations are laid out differently for XLA than for plain graphs and
eager execution (see `_memory.direction` and `_driver.run`), so they need to
know whether the graph under construction will be compiled by XLA; a few
are laid out for a CPU's caches and skip that when a GPU or TPU is there.
"""

import tensorflow as tf

# Private, but the only way to tell that a graph is being built for XLA.
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

__all__ = ["in_xla_context", "accelerator_visible"]


def in_xla_context():
  """Whether the ops being built will be compiled by XLA."""
  if tf.executing_eagerly():
    return False
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())


def accelerator_visible():
  """Whether TensorFlow sees a GPU or TPU (ops then go there by default)."""
  return bool(tf.config.list_logical_devices("GPU")
              or tf.config.list_logical_devices("TPU"))
