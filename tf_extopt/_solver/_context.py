"""Whether the ops being built will be compiled by XLA.

Some computations are laid out differently for XLA than for plain graphs and
eager execution (see `_memory.direction` and `_driver.run`), so they need to
know whether the graph under construction will be compiled by XLA. (Which
devices TensorFlow sees is `tf_extopt._devices`, shared with the interface
wing.)
"""

import tensorflow as tf

# Private, but the only way to tell that a graph is being built for XLA.
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

__all__ = ["in_xla_context"]


def in_xla_context():
  """Whether the ops being built will be compiled by XLA."""
  if tf.executing_eagerly():
    return False
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())

