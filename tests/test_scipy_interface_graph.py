"""ScipyOptimizerInterface under a real graph-mode tf.compat.v1.Session.

Contrib's test matrix (mock subclass, Rosenbrock over nine methods, SLSQP
with constraints, bounds, callbacks, `method` kept) plus feed_dict,
var_list subsets, run_kwargs, no-new-ops, logging and failure semantics.
Every test builds its own `tf.Graph`, so eager mode stays on for the other
test files in the same process.
"""

import logging
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests import _scipy_interface_helpers as helpers
from tf_extopt import ExternalOptimizerInterface
from tf_extopt import ScipyOptimizerInterface

v1 = tf.compat.v1


MockOptimizerInterface = helpers.MockOptimizerInterface


class StrictSubsetInterface(ExternalOptimizerInterface):
  """Declares a subset of the arguments and no **kwargs."""

  def _minimize(self, initial_val, loss_grad_func):
    _, grad = loss_grad_func(initial_val)
    return initial_val - grad


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
                                 StrictSubsetInterface])
def test_mock_unpacks_scalar_vector_matrix(cls):
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


def test_mock_callback_counts():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., -2.], name="vector")
    loss = tf.reduce_sum(tf.square(vector)) / 2.
    optimizer = MockOptimizerInterface(loss)
    sess.run(v1.global_variables_initializer())
    initial = sess.run(vector)
    step_callback = mock.Mock()
    loss_callback = mock.Mock()
    optimizer.minimize(sess, fetches=[loss], step_callback=step_callback,
                       loss_callback=loss_callback)
    loss_val = float((initial ** 2).sum() / 2.)
    # Two explicit evaluations plus the one computing the returned point.
    assert loss_callback.call_count == MockOptimizerInterface.NUM_LOSS_CALLS + 1
    loss_callback.assert_has_calls([mock.call(loss_val)] *
                                   MockOptimizerInterface.NUM_LOSS_CALLS)
    assert step_callback.call_count == MockOptimizerInterface.NUM_STEP_CALLS
    np.testing.assert_allclose(step_callback.call_args[0][0], initial)


def test_base_class_minimize_raises_not_implemented():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., -2.], name="vector")
    optimizer = ExternalOptimizerInterface(tf.reduce_sum(vector))
    sess.run(v1.global_variables_initializer())
    with pytest.raises(NotImplementedError, match="subclass"):
      optimizer.minimize(sess)
    np.testing.assert_array_equal(sess.run(vector), [7., -2.])


@pytest.mark.parametrize("method,options,tol_scipy,tol_opt,dimension",
                         helpers.METHOD_CASES, ids=helpers.METHOD_IDS)
def test_rosenbrock_methods_match_scipy(method, options, tol_scipy, tol_opt,
                                        dimension):
  expected = helpers.scipy_reference(method, options, dimension)
  with helpers.graph_session() as (_, sess):
    x = v1.Variable(np.zeros(dimension), dtype=tf.float64, name="x")
    kwargs = {} if method == "L-BFGS-B" else {"method": method}
    optimizer = ScipyOptimizerInterface(helpers.rosen_tf(x), options=options,
                                        **kwargs)
    sess.run(v1.global_variables_initializer())
    result = optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(x), expected.x, atol=tol_scipy)
    np.testing.assert_allclose(sess.run(x), np.ones(dimension), atol=tol_opt)
    # Rounding differs (TF vs NumPy formulas), so trajectories may part
    # ways; the interface must still not cost SciPy extra evaluations.
    assert result.nfev <= 2 * expected.nfev
    np.testing.assert_allclose(result.x, sess.run(x))


def test_rosenbrock_float32_default_method():
  with helpers.graph_session() as (_, sess):
    x = v1.Variable(np.zeros(5), dtype=tf.float32, name="x")
    optimizer = ScipyOptimizerInterface(helpers.rosen_tf(x))
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    assert sess.run(x).dtype == np.float32
    np.testing.assert_allclose(sess.run(x), np.ones(5), atol=1e-3)


def test_slsqp_equality_and_inequality():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    optimizer = ScipyOptimizerInterface(
        loss, equalities=[vector[1] - 1.], inequalities=[vector[0] - 1.],
        method="SLSQP")
    sess.run(v1.global_variables_initializer())
    result = optimizer.minimize(sess)
    assert result.success
    np.testing.assert_allclose(sess.run(vector), [1., 1.], atol=1e-5)


def test_scalar_bounds():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    optimizer = ScipyOptimizerInterface(
        loss, var_to_bounds={vector: (1., np.inf)})
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(vector), [1., 1.])


def test_vector_bounds_with_none_entries():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    bounds = {vector: ([None, 2.], None)}
    optimizer = ScipyOptimizerInterface(loss, var_to_bounds=bounds)
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(vector), [0., 2.], atol=1e-6)
    assert bounds[vector] == ([None, 2.], None)


def test_method_kept_and_options_not_mutated():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    options = {"maxiter": 100}
    optimizer = ScipyOptimizerInterface(loss, method="SLSQP", options=options)
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    optimizer.minimize(sess)
    assert optimizer.optimizer_kwargs.get("method") == "SLSQP"
    assert optimizer.optimizer_kwargs["options"] is options
    assert options == {"maxiter": 100}


def test_fetches_with_loss_callback():
  with helpers.graph_session() as (_, sess):
    vector_val = np.array([7., -2.], dtype=np.float32)
    vector = v1.Variable(vector_val, name="vector")
    target = np.arange(2)
    loss = tf.reduce_sum(tf.square(vector - tf.constant(target, tf.float32)))
    loss /= 2.
    optimizer = ScipyOptimizerInterface(loss, method="SLSQP")
    sess.run(v1.global_variables_initializer())
    step_callback = mock.Mock()
    loss_callback = mock.Mock()
    result = optimizer.minimize(sess, fetches=[loss, vector],
                                loss_callback=loss_callback,
                                step_callback=step_callback)
    first_loss, first_vector = loss_callback.call_args_list[0][0]
    np.testing.assert_allclose(first_loss,
                               ((vector_val - target) ** 2).sum() / 2.)
    np.testing.assert_allclose(first_vector, vector_val)
    assert loss_callback.call_count == result.nfev
    assert step_callback.call_count == result.nit
    np.testing.assert_allclose(step_callback.call_args[0][0], target,
                               atol=1e-6)


def test_feed_dict_placeholders():
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


def test_var_list_subset_leaves_others_untouched():
  with helpers.graph_session() as (_, sess):
    a = v1.Variable([5., 5.], name="a")
    b = v1.Variable([5., 5.], name="b")
    loss = tf.reduce_sum(tf.square(a - 1.)) + tf.reduce_sum(tf.square(b))
    var_list = [a]
    optimizer = ScipyOptimizerInterface(loss, var_list=var_list)
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    np.testing.assert_allclose(sess.run(a), [1., 1.], atol=1e-6)
    np.testing.assert_array_equal(sess.run(b), [5., 5.])
    assert var_list == [a]


def test_default_session_and_no_new_ops():
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


def test_logs_termination_message():
  with helpers.graph_session() as (_, sess):
    vector = v1.Variable([7., 7.], name="vector")
    loss = tf.reduce_sum(tf.square(vector))
    optimizer = ScipyOptimizerInterface(loss)
    sess.run(v1.global_variables_initializer())
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = tf.get_logger()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
      result = optimizer.minimize(sess)
    finally:
      logger.removeHandler(handler)
      logger.setLevel(old_level)
    text = "\n".join(records)
    assert "Optimization terminated with:" in text
    assert "Number of functions evaluations: %d" % result.nfev in text


def test_loss_raising_on_20th_call_keeps_best_point():
  with helpers.graph_session() as (_, sess):
    x = v1.Variable(np.zeros(3), dtype=tf.float64, name="x")
    counter = v1.Variable(0, name="counter", trainable=False)
    increment = counter.assign_add(1)
    with tf.control_dependencies([increment]):
      check = tf.debugging.Assert(increment < 20, ["too many calls"])
    with tf.control_dependencies([check]):
      loss = helpers.rosen_tf(x)
    optimizer = ScipyOptimizerInterface(loss, var_list=[x])
    sess.run(v1.global_variables_initializer())
    seen = []
    with pytest.raises(tf.errors.InvalidArgumentError, match="too many calls"):
      optimizer.minimize(sess, fetches=[loss, x],
                         loss_callback=lambda f, xv: seen.append((f, xv)))
    assert len(seen) == 19
    best_f, best_x = min(seen, key=lambda item: item[0])
    np.testing.assert_array_equal(sess.run(x), best_x)
    assert best_f < seen[0][0]


def test_errors():
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


def test_unused_variable_and_embedding_gradients():
  with helpers.graph_session() as (_, sess):
    table = v1.Variable(tf.ones([5, 2]), name="table")
    unused = v1.Variable([3., 3.], name="unused")
    rows = tf.nn.embedding_lookup(table, [0, 2, 2])  # IndexedSlices gradient.
    loss = tf.reduce_sum(tf.square(rows - 4.))
    optimizer = ScipyOptimizerInterface(loss, var_list=[table, unused])
    sess.run(v1.global_variables_initializer())
    optimizer.minimize(sess)
    expected = np.ones([5, 2])
    expected[[0, 2]] = 4.
    np.testing.assert_allclose(sess.run(table), expected, atol=1e-5)
    np.testing.assert_array_equal(sess.run(unused), [3., 3.])


def test_callable_loss_and_constraints_in_graph_are_built_once():
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
