"""ScipyOptimizerInterface in eager mode and in a TF1 graph session.

Every test here runs once per regime (the `regime` fixture, see
`tests/_regimes.py`): contrib's matrix (mock subclasses, Rosenbrock over
nine methods against SciPy, constraints, bounds, fetches and callbacks),
var_list subsets, options never mutated, the failure semantics (the best
point is kept), progress callbacks against SciPy's iterates, and the
errors both modes share. What only one mode has lives in
`test_scipy_interface_eager.py` and `test_scipy_interface_graph.py`.
"""

import logging
from unittest import mock
import warnings

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from tests import _scipy_interface_helpers as helpers
from tests._regimes import regime  # pylint: disable=unused-import
from tf_extopt import ExternalOptimizerInterface
from tf_extopt import ScipyOptimizerInterface

# pylint: disable=redefined-outer-name

MockOptimizerInterface = helpers.MockOptimizerInterface


def _rosen(regime, x):
  return regime.tensor(lambda: helpers.rosen_tf(x))


# --- Contrib's matrix ------------------------------------------------------


def _quadratic(regime):
  """Contrib's problem: a scalar, a vector and a matrix, each pulled to its
  slice of 0..8, so the optimum is the target itself."""
  scalar = regime.variable(0.5, name="scalar")
  vector = regime.variable([7., -2.], name="vector")
  matrix = regime.variable(np.ones([2, 3], np.float32), name="matrix")
  target = np.arange(9, dtype=np.float32)
  loss = regime.tensor(lambda: (
      tf.reduce_sum(tf.square(vector - target[:2]))
      + tf.square(scalar - target[2])
      + tf.reduce_sum(tf.square(matrix - target[3:].reshape(2, 3)))) / 2.)
  return scalar, vector, matrix, loss


def _check_quadratic_optimum(regime, scalar, vector, matrix, result):
  np.testing.assert_allclose(regime.value(vector), [0., 1.])
  np.testing.assert_allclose(regime.value(scalar), 2.)
  np.testing.assert_allclose(regime.value(matrix),
                             np.arange(3, 9).reshape(2, 3))
  # Packed in var_list order: scalar, vector, matrix.
  np.testing.assert_allclose(result.x, [2, 0, 1, 3, 4, 5, 6, 7, 8])


def test_mock_unpacks_scalar_vector_matrix_and_counts_callbacks(regime):
  scalar, vector, matrix, loss = _quadratic(regime)
  optimizer = MockOptimizerInterface(loss, [scalar, vector, matrix])
  step_callback, loss_callback = mock.Mock(), mock.Mock()
  result = regime.minimize(optimizer, fetches=[loss],
                           step_callback=step_callback,
                           loss_callback=loss_callback)
  _check_quadratic_optimum(regime, scalar, vector, matrix, result)
  assert step_callback.call_count == MockOptimizerInterface.NUM_STEP_CALLS
  np.testing.assert_allclose(step_callback.call_args[0][0],
                             [0.5, 7., -2., 1., 1., 1., 1., 1., 1.])
  # Two explicit evaluations plus the one computing the returned point.
  assert loss_callback.call_count == MockOptimizerInterface.NUM_LOSS_CALLS + 1
  initial_loss = (49 + 9 + 2.25 + sum((1 - k) ** 2 for k in range(3, 9))) / 2
  loss_callback.assert_has_calls([mock.call(initial_loss)] *
                                 MockOptimizerInterface.NUM_LOSS_CALLS)


def test_strict_subset_interface_unpacks(regime):
  scalar, vector, matrix, loss = _quadratic(regime)
  result = regime.minimize(
      helpers.StrictSubsetInterface(loss, [scalar, vector, matrix]))
  _check_quadratic_optimum(regime, scalar, vector, matrix, result)


def test_base_class_minimize_raises_not_implemented(regime):
  vector = regime.variable([7., -2.], name="vector")
  optimizer = ExternalOptimizerInterface(
      regime.tensor(lambda: tf.reduce_sum(vector)), [vector])
  with pytest.raises(NotImplementedError, match="subclass"):
    regime.minimize(optimizer)
  np.testing.assert_array_equal(regime.value(vector), [7., -2.])


@pytest.mark.parametrize("method,options,tol_scipy,tol_opt,dimension",
                         helpers.METHOD_CASES, ids=helpers.METHOD_IDS)
def test_rosenbrock_methods_match_scipy(regime, method, options, tol_scipy,
                                        tol_opt, dimension):
  expected = helpers.scipy_reference(method, options, dimension)
  x = regime.variable(np.zeros(dimension), dtype=tf.float64, name="x")
  kwargs = {} if method == "L-BFGS-B" else {"method": method}
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x],
                                      options=options, **kwargs)
  result = regime.minimize(optimizer)
  np.testing.assert_allclose(regime.value(x), expected.x, atol=tol_scipy)
  np.testing.assert_allclose(regime.value(x), np.ones(dimension),
                             atol=tol_opt)
  np.testing.assert_allclose(result.x, regime.value(x))
  # Rounding differs (TF vs NumPy formulas), so trajectories may part
  # ways; the interface must still not cost SciPy extra evaluations.
  assert result.nfev <= 2 * expected.nfev


def test_rosenbrock_float32_default_method(regime):
  x = regime.variable(np.zeros(5), dtype=tf.float32, name="x")
  regime.minimize(ScipyOptimizerInterface(_rosen(regime, x), [x]))
  assert regime.value(x).dtype == np.float32
  np.testing.assert_allclose(regime.value(x), np.ones(5), atol=1e-3)


# --- Options SciPy renamed since contrib -----------------------------------


def test_contrib_tnc_case_reaches_the_minimum(regime):
  """Contrib's own TNC test: `maxiter` was TNC's limit on evaluations, which
  SciPy now calls `maxfun` (the old name would leave TNC at its default of
  100 evaluations, far from the minimum)."""
  x = regime.variable(np.zeros(5), dtype=tf.float32, name="x")
  options = {"gtol": -5, "maxiter": 1000}
  with pytest.warns(FutureWarning, match="SciPy has renamed the TNC option "
                    "'maxiter' to 'maxfun'"):
    optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x],
                                        method="TNC", options=options)
  with warnings.catch_warnings():
    warnings.simplefilter("error", scipy.optimize.OptimizeWarning)
    result = regime.minimize(optimizer)
  assert options == {"gtol": -5, "maxiter": 1000}
  assert result.nfev > 100
  # Contrib's tolerance for this case.
  np.testing.assert_allclose(regime.value(x), np.ones(5), rtol=1e-1,
                             atol=1e-1)


def test_nelder_mead_contrib_era_tolerances(regime):
  """`xtol`/`ftol` are Nelder-Mead's `xatol`/`fatol` under their old names:
  the same run as SciPy's with the new names."""
  budget = {"maxiter": 20000, "maxfev": 20000, "adaptive": True}
  expected = helpers.scipy_reference(
      "Nelder-Mead", dict(budget, xatol=1e-10, fatol=1e-10), 5)
  x = regime.variable(np.zeros(5), dtype=tf.float64, name="x")
  with pytest.warns(FutureWarning) as record:
    optimizer = ScipyOptimizerInterface(
        _rosen(regime, x), [x], method="Nelder-Mead",
        options=dict(budget, xtol=1e-10, ftol=1e-10))
  messages = sorted(str(w.message) for w in record
                    if w.category is FutureWarning)
  assert len(messages) == 2
  assert "'ftol' to 'fatol'" in messages[0]
  assert "'xtol' to 'xatol'" in messages[1]
  regime.minimize(optimizer)
  np.testing.assert_allclose(regime.value(x), expected.x, atol=1e-6)
  np.testing.assert_allclose(regime.value(x), np.ones(5), atol=1e-6)


def test_renamed_option_given_under_both_names(regime):
  x = regime.variable(np.zeros(5), dtype=tf.float64, name="x")
  with pytest.warns(FutureWarning, match="both are given, so 'maxiter'=10 is "
                    "ignored"):
    optimizer = ScipyOptimizerInterface(
        _rosen(regime, x), [x], method="TNC",
        options={"maxiter": 10, "maxfun": 40})
  result = regime.minimize(optimizer)
  assert 10 < result.nfev <= 41  # SciPy's maxfun, not the old maxiter.


def test_slsqp_equality_and_inequality(regime):
  vector = regime.variable([7., 7.], name="vector")
  optimizer = ScipyOptimizerInterface(
      regime.tensor(lambda: tf.reduce_sum(tf.square(vector))), [vector],
      equalities=[regime.tensor(lambda: vector[1] - 1.)],
      inequalities=[regime.tensor(lambda: vector[0] - 1.)], method="SLSQP")
  result = regime.minimize(optimizer)
  assert result.success
  np.testing.assert_allclose(regime.value(vector), [1., 1.], atol=1e-5)


@pytest.mark.filterwarnings("ignore:delta_grad == 0.0")
def test_trust_constr_with_constraints_and_bounds(regime):
  vector = regime.variable([3., 3.], dtype=tf.float64, name="vector")
  optimizer = ScipyOptimizerInterface(
      regime.tensor(lambda: tf.reduce_sum(tf.square(vector))), [vector],
      equalities=[regime.tensor(lambda: vector[1] - 1.)],
      var_to_bounds=[(vector, (0.5, None))], method="trust-constr",
      options={"gtol": 1e-10, "xtol": 1e-10})
  regime.minimize(optimizer)
  np.testing.assert_allclose(regime.value(vector), [0.5, 1.], atol=1e-4)


def test_scalar_and_vector_bounds_with_ref_keys(regime):
  vector = regime.variable([7., 7.], name="vector")
  matrix = regime.variable(np.full([2, 3], 7., np.float32), name="matrix")
  loss = regime.tensor(lambda: tf.reduce_sum(tf.square(vector))
                       + tf.reduce_sum(tf.square(matrix)))
  var_to_bounds = {vector.ref(): (1., np.inf),
                   matrix.ref(): ([[None], [-np.inf]], [[np.inf], [-2.]])}
  snapshot = dict(var_to_bounds)
  optimizer = ScipyOptimizerInterface(loss, [vector, matrix],
                                      var_to_bounds=var_to_bounds)
  regime.minimize(optimizer)
  np.testing.assert_allclose(regime.value(vector), [1., 1.])
  np.testing.assert_allclose(regime.value(matrix),
                             [[0., 0., 0.], [-2., -2., -2.]], atol=1e-6)
  assert var_to_bounds == snapshot


def test_fetches_with_loss_callback(regime):
  vector = regime.variable([7., -2.], name="vector")
  target = np.array([0., 1.], np.float32)
  loss = regime.tensor(lambda: tf.reduce_sum(tf.square(vector - target)) / 2.)
  optimizer = ScipyOptimizerInterface(loss, [vector], method="SLSQP")
  seen, steps = [], []
  # The loss, a variable and an expression of it (callables in eager mode).
  result = regime.minimize(
      optimizer, fetches=[loss, vector, regime.tensor(lambda: 2. * vector)],
      loss_callback=lambda *values: seen.append(values),
      step_callback=steps.append)
  assert len(seen) == result.nfev
  assert len(steps) == result.nit
  f0, v0, doubled0 = seen[0]
  np.testing.assert_allclose(f0, (49 + 9) / 2.)
  np.testing.assert_allclose(v0, [7., -2.])
  np.testing.assert_allclose(doubled0, [14., -4.])
  np.testing.assert_allclose(steps[-1], target, atol=1e-6)


def test_var_list_subset_and_not_mutated(regime):
  a = regime.variable([5., 5.], name="a")
  b = regime.variable([5., 5.], name="b")
  var_list = [a]
  optimizer = ScipyOptimizerInterface(
      regime.tensor(lambda: tf.reduce_sum(tf.square(a - 1.))
                    + tf.reduce_sum(b * b)), var_list)
  regime.minimize(optimizer)
  np.testing.assert_allclose(regime.value(a), [1., 1.], atol=1e-6)
  np.testing.assert_array_equal(regime.value(b), [5., 5.])
  assert var_list == [a] and len(var_list) == 1


@pytest.mark.parametrize("method", ["L-BFGS-B", "SLSQP"])
def test_method_kept_and_options_not_mutated(regime, method):
  x = regime.variable([3., 3.], name="x")
  options = {"maxiter": 3}
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x], method=method,
                                      options=options, tol=1e-12)
  for _ in range(2):  # A second run sees the same method and options.
    result = regime.minimize(optimizer)
    assert result.nit <= 3
  assert options == {"maxiter": 3}
  assert optimizer.optimizer_kwargs == {"method": method,
                                        "options": {"maxiter": 3},
                                        "tol": 1e-12}
  assert optimizer.optimizer_kwargs["options"] is options


def test_mixed_dtypes_pack_to_float64_and_cast_back(regime):
  dtypes = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
  variables = [regime.variable(np.zeros(2), dtype=d) for d in dtypes]
  targets = [0.5, -1.5, 2.25, 3.125]  # Exactly representable in all four.
  loss = regime.tensor(lambda: tf.add_n(
      [tf.reduce_sum(tf.square(tf.cast(v, tf.float32) - t))
       for v, t in zip(variables, targets)]))
  result = regime.minimize(ScipyOptimizerInterface(loss, variables))
  assert result.x.dtype == np.float64
  for v, d, t in zip(variables, dtypes, targets):
    assert v.dtype == d
    np.testing.assert_allclose(regime.value(v).astype(np.float64), [t, t],
                               atol=2e-2)


def test_unused_variable_gets_zero_gradient_and_embedding_is_dense(regime):
  table = regime.variable(np.ones([5, 2], np.float32), name="table")
  unused = regime.variable([3., 3.], name="unused")

  def rows_loss():
    rows = tf.nn.embedding_lookup(table, [0, 2, 2])  # IndexedSlices gradient.
    return tf.reduce_sum(tf.square(rows - 4.))

  loss = regime.tensor(rows_loss)
  optimizer = ScipyOptimizerInterface(loss, [table, unused])
  seen = []
  regime.minimize(optimizer, fetches=[loss], step_callback=seen.append)
  expected = np.ones([5, 2])
  expected[[0, 2]] = 4.
  np.testing.assert_allclose(regime.value(table), expected, atol=1e-5)
  np.testing.assert_array_equal(regime.value(unused), [3., 3.])
  # The analytic gradient at the start, against the packed one.
  run = optimizer._evaluator.bind(regime.session, None, None, {})  # pylint: disable=protected-access
  out, _ = run.value_and_grad(np.concatenate([np.ones(10), [3., 3.]]))
  grad = np.zeros(12)
  grad[[0, 1]] = 2 * (1 - 4.)
  grad[[4, 5]] = 2 * 2 * (1 - 4.)
  np.testing.assert_allclose(out[1:], grad)


def test_custom_callable_method_and_lowercase_name(regime):
  x = regime.variable([3., -1.], name="x")
  loss = regime.tensor(lambda: tf.reduce_sum(tf.square(x - 1.)))
  calls = []

  def gradient_descent(fun, x0, jac, callback, **unused_kwargs):
    point = x0
    for _ in range(50):
      point = point - 0.25 * jac(point)
      callback(point)
    calls.append(True)
    return scipy.optimize.OptimizeResult(x=point, fun=fun(point),
                                         success=True, nit=50, nfev=51)

  result = regime.minimize(ScipyOptimizerInterface(loss, [x],
                                                   method=gradient_descent))
  assert calls and result.nit == 50
  np.testing.assert_allclose(regime.value(x), [1., 1.], atol=1e-6)
  regime.assign(x, [3., -1.])
  regime.minimize(ScipyOptimizerInterface(loss, [x], method="l-bfgs-b"))
  np.testing.assert_allclose(regime.value(x), [1., 1.], atol=1e-6)


def test_logs_termination_message(regime):
  vector = regime.variable([7., 7.], name="vector")
  optimizer = ScipyOptimizerInterface(
      regime.tensor(lambda: tf.reduce_sum(tf.square(vector))), [vector])
  records = []
  handler = logging.Handler()
  handler.emit = lambda record: records.append(record.getMessage())
  logger = tf.get_logger()
  old_level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    result = regime.minimize(optimizer)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  text = "\n".join(records)
  assert "Optimization terminated with:" in text
  assert "Number of functions evaluations: %d" % result.nfev in text


# --- Failure semantics and early stops ---------------------------------------


def test_loss_raising_on_20th_call_keeps_best_point(regime):
  x = regime.variable(np.zeros(3), dtype=tf.float64, name="x")
  counter = regime.variable(0, name="counter", trainable=False)

  def counted_loss():
    count = counter.assign_add(1)
    with tf.control_dependencies([tf.debugging.assert_less(
        count, 20, message="too many calls")]):
      return helpers.rosen_tf(x)

  optimizer = ScipyOptimizerInterface(regime.tensor(counted_loss), [x])
  seen = []
  with pytest.raises(tf.errors.InvalidArgumentError, match="too many calls"):
    regime.minimize(optimizer, fetches=[x], loss_callback=seen.append)
  assert len(seen) == 19
  values = helpers.rosen_values(regime, seen)
  best = seen[int(np.argmin(values))]
  np.testing.assert_array_equal(regime.value(x), best)
  assert min(values) < values[0]


def test_loss_turning_nan_keeps_best_finite_point(regime):
  x = regime.variable([-1.0], dtype=tf.float64, name="x")

  def nan_beyond_one():
    # Minimum at 3, but NaN beyond 1: the best finite point is at x <= 1.
    value = tf.reduce_sum(tf.square(x - 3.))
    return tf.where(x[0] > 1., tf.constant(np.nan, tf.float64), value)

  loss = regime.tensor(nan_beyond_one)
  optimizer = ScipyOptimizerInterface(loss, [x])
  seen = []
  result = regime.minimize(optimizer, fetches=[loss, x],
                           loss_callback=lambda f, v: seen.append((f, v)))
  finite = [(f, v) for f, v in seen if np.isfinite(f)]
  assert len(finite) < len(seen)  # It did step into the NaN region.
  best_f, best_x = min(finite, key=lambda item: item[0])
  assert np.isfinite(regime.value(x)).all()
  np.testing.assert_array_equal(regime.value(x), best_x)
  np.testing.assert_array_equal(result.x, best_x)
  assert result.fun == best_f


def test_stop_iteration_in_step_callback_ends_cleanly(regime):
  x = regime.variable(np.zeros(4), dtype=tf.float64, name="x")
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x])
  seen, steps = [], []

  def step(xk):
    steps.append(xk)
    if len(steps) == 3:
      raise StopIteration

  result = regime.minimize(optimizer, fetches=[x], step_callback=step,
                           loss_callback=seen.append)
  assert len(steps) == 3
  assert result.status == 99 and not result.success
  assert "StopIteration" in result.message
  values = helpers.rosen_values(regime, seen)
  np.testing.assert_array_equal(regime.value(x), seen[int(np.argmin(values))])
  np.testing.assert_allclose(result.fun, min(values))


@pytest.mark.parametrize("method", ["L-BFGS-B", "Nelder-Mead", "TNC"])
def test_progress_callback_matches_scipy_iterates(regime, method):
  """`progress_callback` sees SciPy's iterates and losses; for TNC, whose
  callback gets only the point, the loss comes from the interface."""
  x = regime.variable(np.zeros(3), dtype=tf.float64, name="x")
  options = {"maxfun": 60} if method == "TNC" else {"maxiter": 15}
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x], method=method,
                                      options=options)
  progress = []
  result = regime.minimize(optimizer, progress_callback=progress.append)
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


def test_stop_iteration_in_progress_callback(regime):
  x = regime.variable(np.zeros(3), dtype=tf.float64, name="x")
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x])

  def on_progress(p):
    if p.nit == 2:
      raise StopIteration

  result = regime.minimize(optimizer, progress_callback=on_progress)
  assert result.status == 99 and result.nit == 2
  np.testing.assert_array_equal(regime.value(x), result.x)
  with pytest.raises(TypeError,
                     match="progress_callback must be callable; got int"):
    regime.minimize(optimizer, progress_callback=3)


@pytest.mark.parametrize("method", ["TNC", "Nelder-Mead"])
def test_stop_iteration_for_methods_scipy_does_not_stop(regime, method):
  x = regime.variable(np.zeros(2), dtype=tf.float64, name="x")
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x], method=method)

  def step(unused_xk):
    raise StopIteration

  result = regime.minimize(optimizer, step_callback=step)
  assert result.status == 99
  assert np.isfinite(regime.value(x)).all()
  np.testing.assert_array_equal(regime.value(x), result.x)


def test_keyboard_interrupt_propagates_after_assigning_best_point(regime):
  x = regime.variable(np.zeros(3), dtype=tf.float64, name="x")
  optimizer = ScipyOptimizerInterface(_rosen(regime, x), [x])
  seen = []

  def on_loss(value):
    seen.append(value)
    if len(seen) == 8:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    regime.minimize(optimizer, fetches=[x], loss_callback=on_loss)
  values = helpers.rosen_values(regime, seen)
  # The 8th loss was computed before its callback interrupted, so it counts.
  assert len(seen) == 8
  best = seen[int(np.argmin(values))]
  np.testing.assert_array_equal(regime.value(x), best)


def test_subclass_returning_wrong_shape_raises_and_restores_best_point(
    regime):

  class BadShape(ExternalOptimizerInterface):

    def _minimize(self, initial_val, loss_grad_func, **unused_kwargs):
      loss_grad_func(initial_val)
      loss_grad_func(initial_val + 1.)  # Worse, and moves the variables.
      return np.zeros(initial_val.size + 1)

  x = regime.variable([3., 4.], name="x")
  optimizer = BadShape(regime.tensor(lambda: tf.reduce_sum(tf.square(x))),
                       [x])
  with pytest.raises(ValueError, match=r"returned a point of shape \(3,\); "
                     r"expected \(2,\)"):
    regime.minimize(optimizer)
  np.testing.assert_array_equal(regime.value(x), [3., 4.])


# --- Bad input both modes share ---------------------------------------------


def test_var_list_errors(regime):
  x = regime.variable([1., 2.], name="x")
  loss = regime.tensor(lambda: tf.reduce_sum(x * x))
  with pytest.raises(ValueError, match="only float16, bfloat16, float32 and "
                     "float64"):
    ScipyOptimizerInterface(loss, [x, regime.variable([1, 2])])
  with pytest.raises(TypeError, match="var_list` entries must be tf.Variable"):
    ScipyOptimizerInterface(loss, [x, "x"])
  with pytest.raises(ValueError, match="var_list` is empty"):
    ScipyOptimizerInterface(loss, [])
  with pytest.raises(ValueError, match="has no trainable variables"):
    ScipyOptimizerInterface(loss, tf.Module())
  # A variable listed twice is optimized once.
  optimizer = ScipyOptimizerInterface(loss, [x, x])
  assert regime.minimize(optimizer).x.shape == (2,)


def test_bounds_and_method_errors(regime):
  x = regime.variable(np.ones([2, 3], np.float32), name="x")
  y = regime.variable([1.], name="y")
  loss = regime.tensor(lambda: tf.reduce_sum(x * x))
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
    ScipyOptimizerInterface(loss, [x],
                            inequalities=[regime.tensor(lambda: x[0, 0])],
                            method="CG")
  with pytest.raises(ValueError, match="method 'lbfgs' is not a "
                     "scipy.optimize.minimize method"):
    ScipyOptimizerInterface(loss, [x], method="lbfgs")
  with pytest.raises(TypeError, match="options must be a dict"):
    ScipyOptimizerInterface(loss, [x], options=[("maxiter", 3)])
