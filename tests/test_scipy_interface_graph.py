"""ScipyOptimizerInterface: what only a graph-mode tf.compat.v1.Session has.

The default var_list (the trainable-variables collection), variables as
`var_to_bounds` keys, feed_dict, the default session, no new ops, run_kwargs,
graph-mode errors, callable losses built once, and a whole TF1 program with
v2 behaviour disabled. Everything both modes share runs in both regimes in
`test_scipy_interface.py`. Every test builds its own `tf.Graph`, so eager
mode stays on for the other test files in the same process.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import _scipy_interface_helpers as helpers
from tf_extopt import ScipyOptimizerInterface

v1 = tf.compat.v1


MockOptimizerInterface = helpers.MockOptimizerInterface


def _quadratic_graph(dtype=tf.float32):
  scalar = v1.Variable(tf.random.normal([], dtype=dtype), name="scalar")
  vector = v1.Variable(tf.random.normal([2], dtype=dtype), name="vector")
  matrix = v1.Variable(tf.random.normal([2, 3], dtype=dtype), name="matrix")
  target = tf.constant(np.arange(9), dtype=dtype)
  loss = tf.reduce_sum(tf.square(vector - target[:2])) / 2.
  loss += tf.reduce_sum(tf.square(scalar - target[2])) / 2.
  loss += tf.reduce_sum(
      tf.square(matrix - tf.reshape(target[3:], [2, 3]))) / 2.
  return scalar, vector, matrix, loss


@pytest.mark.parametrize("cls", [MockOptimizerInterface,
                                 helpers.StrictSubsetInterface])
def test_var_list_defaults_to_trainable_variables(cls):
  # Graph only: eager mode requires var_list.
  with helpers.graph_session() as (_, sess):
    scalar, vector, matrix, loss = _quadratic_graph()
    optimizer = cls(loss)
    sess.run(v1.global_variables_initializer())
    result = optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(vector), np.arange(2), atol=1e-6)
    np.testing.assert_allclose(sess.run(scalar), 2., atol=1e-6)
    np.testing.assert_allclose(sess.run(matrix),
                               np.arange(3, 9).reshape(2, 3), atol=1e-6)
    # Packed in the trainable-collection order: scalar, vector, matrix.
    np.testing.assert_allclose(result.x, [2, 0, 1, 3, 4, 5, 6, 7, 8],
                               atol=1e-6)


def test_scalar_bounds():
  # Graph only: TF1 variables are dict keys (TF2 ones need `.ref()`).
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    optimizer = ScipyOptimizerInterface(
        loss, var_to_bounds={vector: (1., np.inf)})
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(vector), [1., 1.])


def test_vector_bounds_with_none_entries():
  # Graph only: TF1 variables are dict keys (TF2 ones need `.ref()`).
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    bounds = {vector: ([None, 2.], None)}
    optimizer = ScipyOptimizerInterface(loss, var_to_bounds=bounds)
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(vector), [0., 2.], atol=1e-6)
    assert bounds[vector] == ([None, 2.], None)


def test_feed_dict_placeholders():
  # Graph only: eager losses read their inputs themselves.
  with helpers.graph_session() as (_, sess):
    target = v1.placeholder(tf.float32, [2])
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector - target))
    optimizer = ScipyOptimizerInterface(loss)
    sess.run(v1.global_variables_initializer())
    feed_dict = {target: np.array([3., -4.], np.float32)}
    feed_copy = dict(feed_dict)
    optimizer.minimize(sess, feed_dict=feed_dict)
    np.testing.assert_allclose(sess.run(vector), [3., -4.], atol=1e-5)
    assert feed_dict.keys() == feed_copy.keys()
    optimizer.minimize(sess, feed_dict={target: [1., 2.]})
    np.testing.assert_allclose(sess.run(vector), [1., 2.], atol=1e-5)


def test_default_session_and_no_new_ops():
  # Graph only: sessions and a graph's op count.
  with helpers.graph_session() as (graph, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector - 3.))
    optimizer = ScipyOptimizerInterface(loss)
    sess.run(v1.global_variables_initializer())
    num_ops = len(graph.get_operations())
    with sess.as_default():
      optimizer.minimize()
    sess.run(vector.assign([0., 0.]))
    num_ops = len(graph.get_operations())
    optimizer.minimize(sess)
    assert len(graph.get_operations()) == num_ops
    np.testing.assert_allclose(sess.run(vector), [3., 3.], atol=1e-6)


def test_run_kwargs_reach_every_session_run():
  # Graph only: run_kwargs go to session.run.
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    optimizer = ScipyOptimizerInterface(loss)
    sess.run(v1.global_variables_initializer())
    seen = []

    class SpySession:
      graph = sess.graph

      def run(self, *args, **kwargs):
        seen.append(kwargs.get("options"))
        return sess.run(*args, **kwargs)

    run_options = v1.RunOptions()
    optimizer.minimize(SpySession(), options=run_options)
    # Reading the initial point needs no options; every other run gets them.
    assert len(seen) > 3
    assert all(o is run_options for o in seen[1:])
    np.testing.assert_allclose(sess.run(vector), [0., 0.], atol=1e-5)


def test_errors():
  # Graph only: the errors of graph-mode arguments.
  graph = tf.Graph()
  with graph.as_default():
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    with pytest.raises(ValueError, match="var_to_bounds"):
      ScipyOptimizerInterface(loss, bounds=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="jit_compile applies to eager"):
      ScipyOptimizerInterface(loss, jit_compile=True)
    with pytest.raises(ValueError, match=r"loss must be a scalar Tensor; got "
                       r"shape \(2,\)"):
      ScipyOptimizerInterface(vector * 2.)
    with pytest.raises(TypeError, match=r"In graph mode equalities\[0\] must "
                       "be a scalar Tensor; got float"):
      ScipyOptimizerInterface(loss, equalities=[3.0], method="SLSQP")
    with pytest.raises(ValueError, match="cannot take equality"):
      ScipyOptimizerInterface(loss, equalities=[vector[0]], method="BFGS")
    optimizer = ScipyOptimizerInterface(loss)
    with pytest.raises(ValueError, match="needs a session"):
      optimizer.minimize()
    with pytest.raises(TypeError, match="feed_dict must be a dict"):
      optimizer.minimize(v1.Session(graph=graph), feed_dict=[1.0])
    with pytest.raises(TypeError, match="fetches must be a list"):
      optimizer.minimize(v1.Session(graph=graph), fetches=loss)
  with helpers.graph_session() as (_, other):
    with pytest.raises(ValueError, match="different graph"):
      optimizer.minimize(other)
  with helpers.graph_session():
    with pytest.raises(ValueError, match="no trainable variables"):
      ScipyOptimizerInterface(tf.constant(1.0))


_TF1_PROGRAM = r"""
import numpy as np
import tensorflow.compat.v1 as tf
from tf_extopt import ScipyOptimizerInterface  # was tf.contrib.opt
tf.disable_v2_behavior()

target = tf.placeholder(tf.float32, [2])
vector = tf.Variable([7., 7.], name="vector")  # a legacy RefVariable
loss = tf.reduce_sum(tf.square(vector - target))
optimizer = ScipyOptimizerInterface(
    loss, var_to_bounds={vector: ([None, 2.], None)},
    options={"maxiter": 100})
with tf.Session() as session:
  session.run(tf.global_variables_initializer())
  optimizer.minimize(session, feed_dict={target: [-1., 1.]})
  print("RESULT", *session.run(vector))
"""


@pytest.mark.slow
def test_tf1_program_with_v2_behavior_disabled(tmp_path):
  """A whole TF1 program (RefVariables, hashable dict keys, placeholders), in
  a subprocess because disabling v2 behaviour is process-wide."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  script = tmp_path / "tf1_program.py"
  script.write_text(_TF1_PROGRAM)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                        text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][0]
  np.testing.assert_allclose([float(v) for v in line.split()[1:]], [-1., 2.],
                             atol=1e-5)


def test_callable_loss_and_constraints_in_graph_are_built_once():
  # Graph only: eager mode calls the callables at each (traced) evaluation.
  with helpers.graph_session() as (graph, sess):
    vector = v1.Variable([7., 7.], name="vector")
    calls = []

    def loss():
      calls.append(1)
      return tf.reduce_sum(tf.square(vector))

    optimizer = ScipyOptimizerInterface(
        loss, equalities=[lambda: vector[1] - 1.],
        inequalities=[lambda: vector[0] - 1.], method="SLSQP")
    sess.run(v1.global_variables_initializer())
    num_ops = len(graph.get_operations())
    optimizer.minimize(sess)
    assert len(calls) == 1
    assert len(graph.get_operations()) == num_ops
    np.testing.assert_allclose(sess.run(vector), [1., 1.], atol=1e-5)
