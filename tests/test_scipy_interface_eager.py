"""ScipyOptimizerInterface in TF2 eager mode.

The contrib matrix again, with loss callables, plus what only eager mode
has: tracing once, jit_compile, fetches as callables, failure semantics,
dtype packing, None/IndexedSlices gradients, and every bad-input error.
"""

from unittest import mock

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from tests import _scipy_interface_helpers as helpers
from tf_extopt import ExternalOptimizerInterface
from tf_extopt import ScipyOptimizerInterface


MockOptimizerInterface = helpers.MockOptimizerInterface


def test_mock_unpacks_scalar_vector_matrix_and_counts_callbacks():
  scalar = tf.Variable(0.5, name="scalar")
  vector = tf.Variable([7., -2.], name="vector")
  matrix = tf.Variable(tf.ones([2, 3]), name="matrix")
  target = tf.constant(np.arange(9), tf.float32)

  def loss():
    return (tf.reduce_sum(tf.square(vector - target[:2]))
            + tf.square(scalar - target[2])
            + tf.reduce_sum(tf.square(matrix - tf.reshape(target[3:], [2, 3])))
            ) / 2.

  optimizer = MockOptimizerInterface(loss, [scalar, vector, matrix])
  step_callback, loss_callback = mock.Mock(), mock.Mock()
  result = optimizer.minimize(fetches=[loss], step_callback=step_callback,
                              loss_callback=loss_callback)
  np.testing.assert_allclose(vector.numpy(), [0., 1.])
  np.testing.assert_allclose(scalar.numpy(), 2.)
  np.testing.assert_allclose(matrix.numpy(), np.arange(3, 9).reshape(2, 3))
  np.testing.assert_allclose(result.x, [2, 0, 1, 3, 4, 5, 6, 7, 8])
  assert step_callback.call_count == MockOptimizerInterface.NUM_STEP_CALLS
  assert loss_callback.call_count == MockOptimizerInterface.NUM_LOSS_CALLS + 1
  initial_loss = (49 + 9 + 2.25 + sum((1 - k) ** 2 for k in range(3, 9))) / 2
  np.testing.assert_allclose(loss_callback.call_args_list[0][0][0],
                             initial_loss)


@pytest.mark.parametrize("method,options,tol_scipy,tol_opt,dimension",
                         helpers.METHOD_CASES, ids=helpers.METHOD_IDS)
def test_rosenbrock_methods_match_scipy(method, options, tol_scipy, tol_opt,
                                        dimension):
  expected = helpers.scipy_reference(method, options, dimension)
  x = tf.Variable(np.zeros(dimension), dtype=tf.float64)
  kwargs = {} if method == "L-BFGS-B" else {"method": method}
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x],
                                      options=options, **kwargs)
  result = optimizer.minimize()
  np.testing.assert_allclose(x.numpy(), expected.x, atol=tol_scipy)
  np.testing.assert_allclose(x.numpy(), np.ones(dimension), atol=tol_opt)
  np.testing.assert_allclose(result.x, x.numpy())
  assert result.nfev <= 2 * expected.nfev


@pytest.mark.parametrize("jit_compile", [False, True])
def test_traces_once_across_evaluations_and_minimize_calls(jit_compile):
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


def test_slsqp_equality_and_inequality():
  vector = tf.Variable([7., 7.])
  optimizer = ScipyOptimizerInterface(
      lambda: tf.reduce_sum(tf.square(vector)), [vector],
      equalities=[lambda: vector[1] - 1.],
      inequalities=[lambda: vector[0] - 1.], method="SLSQP")
  result = optimizer.minimize()
  assert result.success
  np.testing.assert_allclose(vector.numpy(), [1., 1.], atol=1e-5)


@pytest.mark.filterwarnings("ignore:delta_grad == 0.0")
def test_trust_constr_with_constraints_and_bounds():
  vector = tf.Variable([3., 3.], dtype=tf.float64)
  optimizer = ScipyOptimizerInterface(
      lambda: tf.reduce_sum(tf.square(vector)), [vector],
      equalities=[lambda: vector[1] - 1.],
      var_to_bounds=[(vector, (0.5, None))], method="trust-constr",
      options={"gtol": 1e-10, "xtol": 1e-10})
  optimizer.minimize()
  np.testing.assert_allclose(vector.numpy(), [0.5, 1.], atol=1e-4)


def test_scalar_and_vector_bounds_with_ref_keys():
  vector = tf.Variable([7., 7.])
  matrix = tf.Variable(tf.fill([2, 3], 7.))

  def loss():
    return tf.reduce_sum(tf.square(vector)) + tf.reduce_sum(tf.square(matrix))

  var_to_bounds = {vector.ref(): (1., np.inf),
                   matrix.ref(): ([[None], [-np.inf]], [[np.inf], [-2.]])}
  snapshot = dict(var_to_bounds)
  optimizer = ScipyOptimizerInterface(loss, [vector, matrix],
                                      var_to_bounds=var_to_bounds)
  optimizer.minimize()
  np.testing.assert_allclose(vector.numpy(), [1., 1.])
  np.testing.assert_allclose(matrix.numpy(), [[0., 0., 0.], [-2., -2., -2.]],
                             atol=1e-6)
  assert var_to_bounds == snapshot


def test_fetches_callables_and_variables_with_loss_callback():
  vector = tf.Variable([7., -2.])
  target = np.array([0., 1.], np.float32)

  def loss():
    return tf.reduce_sum(tf.square(vector - target)) / 2.

  optimizer = ScipyOptimizerInterface(loss, [vector], method="SLSQP")
  seen, steps = [], []
  result = optimizer.minimize(
      fetches=[loss, vector, lambda: 2. * vector],
      loss_callback=lambda *values: seen.append(values),
      step_callback=steps.append)
  assert len(seen) == result.nfev
  assert len(steps) == result.nit
  f0, v0, doubled0 = seen[0]
  np.testing.assert_allclose(f0, (49 + 9) / 2.)
  np.testing.assert_allclose(v0, [7., -2.])
  np.testing.assert_allclose(doubled0, [14., -4.])
  np.testing.assert_allclose(steps[-1], target, atol=1e-6)


def test_var_list_subset_and_not_mutated():
  a = tf.Variable([5., 5.])
  b = tf.Variable([5., 5.])
  var_list = [a]
  optimizer = ScipyOptimizerInterface(
      lambda: tf.reduce_sum(tf.square(a - 1.)) + tf.reduce_sum(b * b),
      var_list)
  optimizer.minimize()
  np.testing.assert_allclose(a.numpy(), [1., 1.], atol=1e-6)
  np.testing.assert_array_equal(b.numpy(), [5., 5.])
  assert var_list == [a] and len(var_list) == 1


def test_options_and_optimizer_kwargs_not_mutated():
  x = tf.Variable([3., 3.])
  options = {"maxiter": 3}
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x],
                                      method="L-BFGS-B", options=options,
                                      tol=1e-12)
  result = optimizer.minimize()
  assert result.nit <= 3
  assert options == {"maxiter": 3}
  assert optimizer.optimizer_kwargs == {"method": "L-BFGS-B",
                                        "options": {"maxiter": 3},
                                        "tol": 1e-12}


def test_mixed_dtypes_pack_to_float64_and_cast_back():
  dtypes = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
  variables = [tf.Variable(tf.zeros([2], dtype=d)) for d in dtypes]
  targets = [0.5, -1.5, 2.25, 3.125]  # Exactly representable in all four.

  def loss():
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32) - t))
                     for v, t in zip(variables, targets)])

  optimizer = ScipyOptimizerInterface(loss, variables)
  result = optimizer.minimize()
  assert result.x.dtype == np.float64
  for v, d, t in zip(variables, dtypes, targets):
    assert v.dtype == d
    np.testing.assert_allclose(v.numpy().astype(np.float64), [t, t],
                               atol=2e-2)


def test_unused_variable_gets_zero_gradient_and_embedding_is_dense():
  table = tf.Variable(tf.ones([5, 2]))
  unused = tf.Variable([3., 3.])

  def loss():
    rows = tf.nn.embedding_lookup(table, [0, 2, 2])  # IndexedSlices gradient.
    return tf.reduce_sum(tf.square(rows - 4.))

  optimizer = ScipyOptimizerInterface(loss, [table, unused])
  seen = []
  optimizer.minimize(fetches=[loss],
                     step_callback=lambda x: seen.append(x))
  expected = np.ones([5, 2])
  expected[[0, 2]] = 4.
  np.testing.assert_allclose(table.numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(unused.numpy(), [3., 3.])
  # The analytic gradient at the start, against the packed one.
  out, _ = optimizer._evaluator.bind(None, None, None, {}).value_and_grad(
      np.concatenate([np.ones(10), [3., 3.]]))
  grad = np.zeros(12)
  grad[[0, 1]] = 2 * (1 - 4.)
  grad[[4, 5]] = 2 * 2 * (1 - 4.)
  np.testing.assert_allclose(out[1:], grad)


def test_tf_level_hook_runs_inside_another_tf_function():
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


# --- Failure semantics -------------------------------------------------------


def _rosen_with_log(x, extra=None):
  """Loss plus a fetch list recording (loss, x) at every evaluation."""
  def loss():
    value = helpers.rosen_tf(x)
    return value if extra is None else value + extra(x)
  return loss


def test_loss_raising_on_20th_call_keeps_best_point():
  x = tf.Variable(np.zeros(3), dtype=tf.float64)
  counter = tf.Variable(0)

  def loss():
    count = counter.assign_add(1)
    tf.debugging.assert_less(count, 20, message="too many calls")
    return helpers.rosen_tf(x)

  optimizer = ScipyOptimizerInterface(loss, [x])
  seen = []
  with pytest.raises(tf.errors.InvalidArgumentError, match="too many calls"):
    optimizer.minimize(fetches=[x], loss_callback=seen.append)
  assert len(seen) == 19
  values = [helpers.rosen_tf(tf.constant(v)).numpy() for v in seen]
  best = seen[int(np.argmin(values))]
  np.testing.assert_array_equal(x.numpy(), best)
  assert min(values) < values[0]


def test_loss_turning_nan_keeps_best_finite_point():
  x = tf.Variable([-1.0], dtype=tf.float64)

  def loss():
    # Minimum at 3, but NaN beyond 1: the best finite point is at x <= 1.
    value = tf.reduce_sum(tf.square(x - 3.))
    return tf.where(x[0] > 1., tf.constant(np.nan, tf.float64), value)

  optimizer = ScipyOptimizerInterface(loss, [x])
  seen = []
  result = optimizer.minimize(fetches=[loss, x],
                              loss_callback=lambda f, v: seen.append((f, v)))
  finite = [(f, v) for f, v in seen if np.isfinite(f)]
  assert len(finite) < len(seen)  # It did step into the NaN region.
  best_f, best_x = min(finite, key=lambda item: item[0])
  assert np.isfinite(x.numpy()).all()
  np.testing.assert_array_equal(x.numpy(), best_x)
  np.testing.assert_array_equal(result.x, best_x)
  assert result.fun == best_f


def test_stop_iteration_in_step_callback_ends_cleanly():
  x = tf.Variable(np.zeros(4), dtype=tf.float64)
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x])
  seen, steps = [], []

  def step(xk):
    steps.append(xk)
    if len(steps) == 3:
      raise StopIteration

  result = optimizer.minimize(fetches=[x], step_callback=step,
                              loss_callback=seen.append)
  assert len(steps) == 3
  assert result.status == 99 and not result.success
  assert "StopIteration" in result.message
  values = [helpers.rosen_tf(tf.constant(v)).numpy() for v in seen]
  np.testing.assert_array_equal(x.numpy(), seen[int(np.argmin(values))])
  np.testing.assert_allclose(result.fun, min(values))


@pytest.mark.parametrize("method", ["L-BFGS-B", "Nelder-Mead", "TNC"])
def test_progress_callback_matches_scipy_iterates(method):
  """`progress_callback` sees SciPy's iterates and losses; for TNC, whose
  callback gets only the point, the loss comes from the interface."""
  x = tf.Variable(np.zeros(3), dtype=tf.float64)
  options = {"maxfun": 60} if method == "TNC" else {"maxiter": 15}
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x],
                                      method=method, options=options)
  progress = []
  result = optimizer.minimize(progress_callback=progress.append)
  expected = []
  gradient_free = method == "Nelder-Mead"
  scipy.optimize.minimize(
      scipy.optimize.rosen, np.zeros(3), method=method,
      jac=None if gradient_free else scipy.optimize.rosen_der,
      callback=lambda xk: expected.append(np.array(xk)), options=options)
  # SciPy's own `nit` may differ by one (Nelder-Mead counts the start).
  assert len(progress) == len(expected) > 0
  assert [p.nit for p in progress] == list(range(1, len(expected) + 1))
  for p, xk in zip(progress, expected):
    # TNC's path amplifies the rounding differences between TF and NumPy.
    if method != "TNC":
      np.testing.assert_allclose(p.x, xk, rtol=1e-10, atol=1e-12)
    assert p.fun == pytest.approx(scipy.optimize.rosen(p.x), rel=1e-12)
  nfev = [p.nfev for p in progress]
  assert all(b >= a for a, b in zip(nfev, nfev[1:]))
  assert 0 < nfev[-1] <= result.nfev


def test_stop_iteration_in_progress_callback():
  x = tf.Variable(np.zeros(3), dtype=tf.float64)
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x])

  def on_progress(p):
    if p.nit == 2:
      raise StopIteration

  result = optimizer.minimize(progress_callback=on_progress)
  assert result.status == 99 and result.nit == 2
  np.testing.assert_array_equal(x.numpy(), result.x)
  with pytest.raises(TypeError,
                     match="progress_callback must be callable; got int"):
    optimizer.minimize(progress_callback=3)


@pytest.mark.parametrize("method", ["TNC", "Nelder-Mead"])
def test_stop_iteration_for_methods_scipy_does_not_stop(method):
  x = tf.Variable(np.zeros(2), dtype=tf.float64)
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x],
                                      method=method)

  def step(unused_xk):
    raise StopIteration

  result = optimizer.minimize(step_callback=step)
  assert result.status == 99
  assert np.isfinite(x.numpy()).all()
  np.testing.assert_array_equal(x.numpy(), result.x)


def test_keyboard_interrupt_propagates_after_assigning_best_point():
  x = tf.Variable(np.zeros(3), dtype=tf.float64)
  optimizer = ScipyOptimizerInterface(lambda: helpers.rosen_tf(x), [x])
  seen = []

  def on_loss(value):
    seen.append(value)
    if len(seen) == 8:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    optimizer.minimize(fetches=[x], loss_callback=on_loss)
  values = [helpers.rosen_tf(tf.constant(v)).numpy() for v in seen]
  # The 8th loss was computed before its callback interrupted, so it counts.
  assert len(seen) == 8
  best = seen[int(np.argmin(values))]
  np.testing.assert_array_equal(x.numpy(), best)


# --- Bad input ---------------------------------------------------------------


def test_eager_only_errors():
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
  x = tf.Variable([1., 2.])
  with pytest.raises(ValueError, match=r"loss must be a scalar; got shape"):
    ScipyOptimizerInterface(lambda: x * x, [x]).minimize()
  with pytest.raises(TypeError, match="real scalar; got dtype string"):
    ScipyOptimizerInterface(lambda: tf.constant("a"), [x]).minimize()
  np.testing.assert_array_equal(x.numpy(), [1., 2.])


def test_var_list_errors():
  x = tf.Variable([1., 2.])
  loss = lambda: tf.reduce_sum(x * x)  # pylint: disable=unnecessary-lambda-assignment
  with pytest.raises(ValueError, match="only float16, bfloat16, float32 and "
                     "float64"):
    ScipyOptimizerInterface(loss, [x, tf.Variable([1, 2])])
  with pytest.raises(TypeError, match="var_list` entries must be tf.Variable"):
    ScipyOptimizerInterface(loss, [x, "x"])
  with pytest.raises(ValueError, match="var_list` is empty"):
    ScipyOptimizerInterface(loss, [])
  with pytest.raises(ValueError, match="has no trainable variables"):
    ScipyOptimizerInterface(loss, tf.Module())
  # A variable listed twice is optimized once.
  optimizer = ScipyOptimizerInterface(loss, [x, x])
  assert optimizer.minimize().x.shape == (2,)


def test_bounds_and_method_errors():
  x = tf.Variable(tf.ones([2, 3]), name="x")
  y = tf.Variable([1.], name="y")
  loss = lambda: tf.reduce_sum(x * x)  # pylint: disable=unnecessary-lambda-assignment
  with pytest.raises(ValueError, match="Bounds must be set using the "
                     "var_to_bounds argument"):
    ScipyOptimizerInterface(loss, [x], bounds=[(0, 1)] * 6)
  for name in ("jac", "callback", "constraints"):
    with pytest.raises(ValueError, match="'%s' is set automatically" % name):
      ScipyOptimizerInterface(loss, [x], **{name: None})
  with pytest.raises(ValueError, match=r"variable 'x:0' has shape \(2,\), "
                     "which does not broadcast"):
    ScipyOptimizerInterface(loss, [x], var_to_bounds=[(x, ([0, 1], None))])
  with pytest.raises(ValueError, match="low > high at flat index 0"):
    ScipyOptimizerInterface(loss, [x], var_to_bounds=[(x, (2., 1.))])
  with pytest.raises(ValueError, match="must be a \\(low, high\\) pair"):
    ScipyOptimizerInterface(loss, [x], var_to_bounds=[(x, 1.)])
  with pytest.raises(ValueError, match="not one of the variables being "
                     "optimized"):
    ScipyOptimizerInterface(loss, [x], var_to_bounds=[(y, (0., 1.))])
  with pytest.raises(ValueError, match="must be numbers or None"):
    ScipyOptimizerInterface(loss, [x], var_to_bounds=[(x, ("a", None))])
  with pytest.raises(ValueError, match="method 'BFGS' cannot take bounds.*"
                     "L-BFGS-B"):
    ScipyOptimizerInterface(loss, [x], var_to_bounds=[(x, (0., 1.))],
                            method="BFGS")
  with pytest.raises(ValueError, match="method 'CG' cannot take equality.*"
                     "SLSQP"):
    ScipyOptimizerInterface(loss, [x], inequalities=[lambda: x[0, 0]],
                            method="CG")
  with pytest.raises(ValueError, match="method 'lbfgs' is not a "
                     "scipy.optimize.minimize method"):
    ScipyOptimizerInterface(loss, [x], method="lbfgs")
  with pytest.raises(TypeError, match="options must be a dict"):
    ScipyOptimizerInterface(loss, [x], options=[("maxiter", 3)])


def test_custom_callable_method_and_lowercase_name():
  x = tf.Variable([3., -1.])

  def loss():
    return tf.reduce_sum(tf.square(x - 1.))

  calls = []

  def gradient_descent(fun, x0, jac, callback, **unused_kwargs):
    import scipy.optimize  # pylint: disable=g-import-not-at-top
    point = x0
    for _ in range(50):
      point = point - 0.25 * jac(point)
      callback(point)
    calls.append(True)
    return scipy.optimize.OptimizeResult(x=point, fun=fun(point),
                                         success=True, nit=50, nfev=51)

  result = ScipyOptimizerInterface(loss, [x],
                                   method=gradient_descent).minimize()
  assert calls and result.nit == 50
  np.testing.assert_allclose(x.numpy(), [1., 1.], atol=1e-6)
  x.assign([3., -1.])
  ScipyOptimizerInterface(loss, [x], method="l-bfgs-b").minimize()
  np.testing.assert_allclose(x.numpy(), [1., 1.], atol=1e-6)


def test_subclass_returning_wrong_shape_raises_and_restores_best_point():

  class BadShape(ExternalOptimizerInterface):

    def _minimize(self, initial_val, loss_grad_func, **unused_kwargs):
      loss_grad_func(initial_val)
      loss_grad_func(initial_val + 1.)  # Worse, and moves the variables.
      return np.zeros(initial_val.size + 1)

  x = tf.Variable([3., 4.])
  optimizer = BadShape(lambda: tf.reduce_sum(tf.square(x)), [x])
  with pytest.raises(ValueError, match=r"returned a point of shape \(3,\); "
                     r"expected \(2,\)"):
    optimizer.minimize()
  np.testing.assert_array_equal(x.numpy(), [3., 4.])
