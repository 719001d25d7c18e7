"""ScipyOptimizerInterface: what only TF2 eager mode has.

Tracing once across evaluations and minimize calls (with and without
jit_compile), the TF-level hook inside another tf.function, the errors of
eager-mode arguments, and the loss checks done when it is first traced.
Everything both modes share runs in both regimes in
`test_scipy_interface.py`.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import _scipy_interface_helpers as helpers
from tf_extopt import ScipyOptimizerInterface


@pytest.mark.parametrize("jit_compile", [False, True])
def test_traces_once_across_evaluations_and_minimize_calls(jit_compile):
  # Eager only: tf.function tracing and XLA.
  x = tf.Variable(np.zeros(3), dtype=tf.float32)
  loss = helpers.CountingLoss(lambda: helpers.rosen_tf(x))
  optimizer = ScipyOptimizerInterface(loss, [x], jit_compile=jit_compile)
  first = optimizer.minimize()
  x.assign([0.5, 0.5, 0.5])
  second = optimizer.minimize()
  assert first.nfev > 10 and second.nfev > 10
  assert loss.calls == 1
  np.testing.assert_allclose(x.numpy(), np.ones(3), atol=1e-3)
  # One more trace for a fetch list, reused while it is the same list.
  fetches = [loss, x]
  seen = []
  for start in ([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]):
    x.assign(start)
    optimizer.minimize(fetches=fetches, loss_callback=lambda *v: seen.append(v))
  assert loss.calls == 3  # The loss itself plus its use as a fetch.
  np.testing.assert_allclose(seen[-1][1], x.numpy())


def test_tf_level_hook_runs_inside_another_tf_function():
  # Eager only: a TF2 tf.function around the evaluator.
  x = tf.Variable([0., 0.], dtype=tf.float64)
  optimizer = ScipyOptimizerInterface(
      lambda: tf.reduce_sum(tf.square(x - [1., 2.])), [x])

  @tf.function
  def gradient_step(point):
    loss, grad = optimizer._evaluator.value_and_gradient_tf(point)
    return loss, point - 0.5 * grad

  loss, new_point = gradient_step(tf.constant([0., 0.], tf.float64))
  np.testing.assert_allclose(loss.numpy(), 5.)
  np.testing.assert_allclose(new_point.numpy(), [1., 2.])


def test_eager_only_errors():
  # Eager only: the errors of eager-mode arguments.
  x = tf.Variable([1., 2.])

  def loss():
    return tf.reduce_sum(x * x)

  with pytest.raises(ValueError, match="var_list is required in eager mode"):
    ScipyOptimizerInterface(loss)
  with pytest.raises(TypeError, match="eager Tensor"):
    ScipyOptimizerInterface(loss(), [x])
  with pytest.raises(TypeError, match="must be a zero-argument callable"):
    ScipyOptimizerInterface(3.0, [x])
  with pytest.raises(TypeError, match=r"equalities\[0\] must be a "
                     "zero-argument callable"):
    ScipyOptimizerInterface(loss, [x], equalities=[x[0]], method="SLSQP")
  with pytest.raises(TypeError, match="equalities must be a list"):
    ScipyOptimizerInterface(loss, [x], equalities=lambda: x[0])
  optimizer = ScipyOptimizerInterface(loss, [x])
  with pytest.raises(ValueError, match="feed_dict is only used in graph mode"):
    optimizer.minimize(feed_dict={})
  with pytest.raises(ValueError, match="session is only used in graph mode"):
    optimizer.minimize(session=object())
  with pytest.raises(ValueError, match="only used in graph mode"):
    optimizer.minimize(options=None)
  with pytest.raises(TypeError, match="fetches must be zero-argument"):
    optimizer.minimize(fetches=["loss"])
  with pytest.raises(TypeError, match="fetches must be a list"):
    optimizer.minimize(fetches=loss)
  with pytest.raises(TypeError, match="step_callback must be callable"):
    optimizer.minimize(step_callback=3)

  @tf.function
  def inside():
    optimizer.minimize()

  with pytest.raises(ValueError, match="cannot be called inside tf.function"):
    inside()

  @tf.function
  def construct():
    ScipyOptimizerInterface(loss, [x])

  with pytest.raises(ValueError, match="cannot be created inside tf.function"):
    construct()
  np.testing.assert_array_equal(x.numpy(), [1., 2.])


def test_loss_shape_and_dtype_errors():
  # Eager only: checked when the loss is traced, at minimize (graph mode
  # checks the Tensor at construction, see the graph module's test_errors).
  x = tf.Variable([1., 2.])
  with pytest.raises(ValueError, match=r"loss must be a scalar; got shape"):
    ScipyOptimizerInterface(lambda: x * x, [x]).minimize()
  with pytest.raises(TypeError, match="real scalar; got dtype string"):
    ScipyOptimizerInterface(lambda: tf.constant("a"), [x]).minimize()
  np.testing.assert_array_equal(x.numpy(), [1., 2.])
