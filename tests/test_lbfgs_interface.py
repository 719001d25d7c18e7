"""LbfgsOptimizerInterface: eager and graph sessions, chunks, bounds, errors.

The reference for every solve is a direct `lbfgs_minimize` (or
`lbfgsb_minimize`) call on the same packed problem: the interface must
follow exactly that path, whatever the chunking and mode. Tests taking the
`regime` fixture (or `shared`) run in eager mode and in a TF1 graph session
(see `tests/_regimes.py`); the few that make sense in one mode only say
why. Graph-mode tests build their own `tf.Graph`, so eager mode stays on
for the other tests.
"""

import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_extopt
from tf_extopt import LbfgsOptimizerInterface
from tf_extopt import lbfgs_minimize
from tf_extopt import lbfgsb_minimize
from tests import _regimes
from tests._regimes import REGIMES
from tests._regimes import Regime
from tests._tracing_helpers import xla_compiled_calls

# pylint: disable=redefined-outer-name

v1 = tf.compat.v1

# The regime cases' graph sessions skip Grappler, which costs 0.3 s per
# solver graph (1.6 s with bounds); the graph-only tests at the end keep the
# default session config, so the interface is run under Grappler too.
_SESSION_CONFIG = _regimes.without_grappler()
regime = _regimes.regime_fixture(_SESSION_CONFIG)

_START_V = np.array([3., -2., 1.5])
_START_W = np.array([[1., 2.], [-.5, .25]])
_TARGET_V = np.array([1., -1., 0.5])
# `var_to_bounds` of the bounded problem, and the same bounds packed.
_LOWER = np.array([1.2] * 3 + [-np.inf] * 4)
_UPPER = np.array([np.inf] * 3 + [0.5] * 4)


def _loss_terms(v, w):
  """A smooth non-quadratic problem over a vector and a matrix."""
  dtype = v.dtype
  scale = tf.range(1., 4., dtype=dtype)
  return (tf.reduce_sum(scale * tf.square(v - _TARGET_V.astype(
      dtype.as_numpy_dtype)))
          + tf.reduce_sum(tf.square(w) + 0.1 * w ** 4)
          + 0.5 * tf.reduce_sum(v[:2] * tf.reshape(w[0], [2])) ** 2)


def _packed_objective(x):
  """The same problem as a function of the packed point [v, w.ravel()].

  One function object for every direct reference solve, so those that only
  differ in tensor-valued options (`max_iterations`) share one trace.
  """
  with tf.GradientTape() as tape:
    tape.watch(x)
    v, w = x[:3], tf.reshape(x[3:], [2, 2])
    loss = _loss_terms(v, w)
  return loss, tape.gradient(loss, x)


def _x0(dtype=np.float64):
  return np.concatenate([_START_V, _START_W.ravel()]).astype(dtype)


def _variables(regime, dtype=tf.float32):
  v = regime.variable(_START_V, dtype=dtype, name="v")
  w = regime.variable(_START_W, dtype=dtype, name="w")
  return v, w


def _loss(regime, v, w):
  return regime.tensor(lambda: _loss_terms(v, w))


def _reference(dtype, max_iterations=25, bounds=None, **options):
  # Module fixtures run before a test's graph becomes the default one.
  assert tf.executing_eagerly()
  # The interface's own default (Wolfe steps), not lbfgs_minimize's.
  options.setdefault("exact_line_search", False)
  x0 = tf.constant(_x0(dtype.as_numpy_dtype))
  if bounds is not None:
    return lbfgsb_minimize(_packed_objective, x0, lower_bounds=bounds[0],
                           upper_bounds=bounds[1],
                           max_iterations=max_iterations, **options)
  return lbfgs_minimize(_packed_objective, x0, max_iterations=max_iterations,
                        **options)


def _packed(regime, v, w):
  v_value, w_value = regime.value([v, w])
  return np.concatenate([v_value.ravel(), w_value.ravel()])


# References shared by both regimes (a direct solve costs a trace).


@pytest.fixture(scope="module")
def reference32():
  return _reference(tf.float32)


@pytest.fixture(scope="module")
def reference64():
  return _reference(tf.float64)


@pytest.fixture(scope="module")
def reference64_3_iterations():
  return _reference(tf.float64, max_iterations=3)


@pytest.fixture(scope="module")
def reference64_options():
  return _reference(tf.float64, max_iterations=7, num_correction_pairs=3,
                    tolerance=0.)


@pytest.fixture(scope="module")
def reference64_bounded():
  return _reference(tf.float64, bounds=(_LOWER, _UPPER))


class _Shared:
  """One float64 problem and optimizer per regime, reset before each use.

  Tracing (or, in graph mode, building) the solver costs seconds, so tests
  that only differ in how they call `minimize` share one instance (which is
  also what users do).
  """

  def __init__(self, regime):
    self.regime = regime
    with regime.active():
      self.v, self.w = _variables(regime, tf.float64)
      self.opt = LbfgsOptimizerInterface(_loss(regime, self.v, self.w),
                                         [self.v, self.w], max_iterations=25)

  def reset(self):
    self.regime.assign(self.v, _START_V)
    self.regime.assign(self.w, _START_W)
    return self

  def packed(self):
    return _packed(self.regime, self.v, self.w)


@pytest.fixture(scope="module", params=REGIMES)
def _shared_problem(request):
  problem = _Shared(Regime(request.param, _SESSION_CONFIG))
  yield problem
  problem.regime.close()


@pytest.fixture
def shared(_shared_problem):
  """The regime's `_Shared`, reset, with its regime active for the test."""
  with _shared_problem.regime.active():
    yield _shared_problem.reset()


# --- Both regimes ---------------------------------------------------------------


def test_exported():
  # No regime: only the package's exports.
  assert tf_extopt.LbfgsOptimizerInterface is LbfgsOptimizerInterface
  assert "LbfgsOptimizerInterface" in tf_extopt.__all__
  # It shares the constructor and the `minimize` template with the SciPy
  # interface through a common base, without contrib's `_minimize` hook,
  # which it would never call.
  assert not hasattr(LbfgsOptimizerInterface, "_minimize")
  common = (set(LbfgsOptimizerInterface.__mro__)
            & set(tf_extopt.ScipyOptimizerInterface.__mro__)) - {object}
  assert [c for c in common if "minimize" in vars(c)]


def test_float32_matches_direct_lbfgs(regime, reference32):
  v, w = _variables(regime, tf.float32)
  opt = LbfgsOptimizerInterface(_loss(regime, v, w), [v, w],
                                max_iterations=25)
  assert opt.dtype == tf.float32
  result = regime.minimize(opt)
  ref = reference32
  np.testing.assert_allclose(result.x, ref.position.numpy(), rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(_packed(regime, v, w), result.x, rtol=1e-6)
  assert result.nit == int(ref.num_iterations)
  assert result.nfev == int(ref.num_objective_evaluations)
  assert result.fun == pytest.approx(float(ref.objective_value), rel=1e-6)
  assert result.lbfgs_results.position.dtype == np.float32
  assert result.status == (0 if bool(ref.converged) else 1)


def test_float64_option_on_float32_variables(regime, reference64):
  v, w = _variables(regime, tf.float32)
  opt = LbfgsOptimizerInterface(_loss(regime, v, w), [v, w],
                                max_iterations=25, dtype=tf.float64)
  assert opt.dtype == tf.float64
  result = regime.minimize(opt)
  assert result.lbfgs_results.position.dtype == np.float64
  # The loss is computed in float32, so the path only follows the float64
  # reference approximately; the optimum is the same.
  np.testing.assert_allclose(result.x, reference64.position.numpy(),
                             atol=2e-3)
  assert v.dtype == tf.float32


def test_float32_var_list_subset_matches_scipy(regime):
  v, w = _variables(regime, tf.float32)
  loss = _loss(regime, v, w)
  opt = LbfgsOptimizerInterface(loss, [v], max_iterations=30)
  assert opt.dtype == tf.float32
  scipy_opt = tf_extopt.ScipyOptimizerInterface(
      loss, [v], options={"gtol": 1e-10, "ftol": 0})
  result = regime.minimize(opt)
  w_after = regime.value(w)
  regime.assign(v, _START_V)
  reference = regime.minimize(scipy_opt)
  np.testing.assert_array_equal(w_after, _START_W.astype(np.float32))
  assert result.x.shape == (3,)
  assert result.fun == pytest.approx(reference.fun, rel=1e-5)
  np.testing.assert_allclose(result.x, reference.x, atol=1e-3)


def test_float64_variables(shared, reference64):
  result = shared.regime.minimize(shared.opt)
  np.testing.assert_allclose(result.x, reference64.position.numpy(),
                             rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(shared.packed(), result.x)
  assert result.nfev == int(reference64.num_objective_evaluations)
  assert result.nit == int(reference64.num_iterations)


def test_callbacks_per_iteration_follow_the_unchunked_path(
    shared, reference64, reference64_3_iterations):
  # With a callback the run goes in chunks (eager: replayed from their
  # record; graph mode: one iteration per call); either way the callback
  # sees every iteration, with the variables holding its point.
  points, held = [], []

  def callback(x):
    points.append(x)
    held.append(shared.packed())

  result = shared.regime.minimize(shared.opt, step_callback=callback)
  ref = reference64
  np.testing.assert_allclose(result.x, ref.position.numpy(), rtol=1e-12,
                             atol=1e-14)
  assert result.nit == int(ref.num_iterations)
  assert result.nfev == int(ref.num_objective_evaluations)
  assert len(points) == result.nit
  np.testing.assert_array_equal(points[-1], result.x)
  for x, h in zip(points, held):
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, h)  # Variables hold the given point.
  # Each point is the one a direct run with that many iterations reaches.
  np.testing.assert_allclose(points[2],
                             reference64_3_iterations.position.numpy(),
                             rtol=1e-12)


def test_chunks_of_four_with_loss_callback(regime, reference64):
  v, w = _variables(regime, tf.float64)
  points, got = [], []
  opt = LbfgsOptimizerInterface(_loss(regime, v, w), [v, w],
                                max_iterations=25, iterations_per_call=4)
  result = regime.minimize(
      opt, step_callback=points.append, fetches=[_loss(regime, v, w), v],
      loss_callback=lambda loss, v_value: got.append((loss, v_value)))
  ref = reference64
  np.testing.assert_allclose(result.x, ref.position.numpy(), rtol=1e-12,
                             atol=1e-14)
  assert result.nfev == int(ref.num_objective_evaluations)
  # Eager runs replay every iteration's step_callback from the chunk's
  # record; graph mode calls it once per chunk. loss_callback is once per
  # chunk in both (its fetches are evaluated at the chunk's end).
  assert len(got) == -(-result.nit // 4)
  assert len(points) == (result.nit if regime.name == "eager" else len(got))
  np.testing.assert_array_equal(points[-1], result.x)
  assert got[-1][0] == pytest.approx(result.fun, rel=1e-12)
  np.testing.assert_allclose(got[-1][1], result.x[:3])


def test_progress_callback_reports_the_solver_state(shared):
  points, progress = [], []

  def on_progress(p):
    progress.append(p)
    if len(progress) == 4:
      raise StopIteration

  result = shared.regime.minimize(shared.opt, step_callback=points.append,
                                  progress_callback=on_progress)
  assert result.status == 99 and len(progress) == 4 == result.nit
  assert [p.nit for p in progress] == [1, 2, 3, 4]
  for p, x in zip(progress, points):
    np.testing.assert_array_equal(p.x, x)
  nfev = [p.nfev for p in progress]
  assert all(b > a for a, b in zip(nfev, nfev[1:]))
  assert nfev[-1] == result.nfev
  assert progress[-1].fun == result.fun
  v_size = shared.v.shape.num_elements()
  expected = _loss_terms(tf.constant(points[-1][:v_size].reshape(
      shared.v.shape)), tf.constant(points[-1][v_size:].reshape(
          shared.w.shape)))
  assert result.fun == pytest.approx(float(shared.regime.value(expected)),
                                     rel=1e-12)


def test_stop_iteration_keeps_that_point(shared):
  calls = []

  def callback(x):
    calls.append(x)
    if len(calls) == 3:
      raise StopIteration

  result = shared.regime.minimize(shared.opt, step_callback=callback)
  assert result.status == 99 and not result.success
  assert "StopIteration" in result.message
  assert len(calls) == 3
  np.testing.assert_array_equal(result.x, calls[-1])
  np.testing.assert_array_equal(shared.packed(), calls[-1])


def test_callback_error_restores_last_point(shared):
  calls = []

  def callback(x):
    calls.append(x)
    if len(calls) == 2:
      raise RuntimeError("boom")

  with pytest.raises(RuntimeError, match="boom"):
    shared.regime.minimize(shared.opt, step_callback=callback)
  np.testing.assert_array_equal(shared.packed(), calls[-1])


def test_options_passed_and_not_mutated(regime, reference64_options):
  v, w = _variables(regime, tf.float64)
  options = {"num_correction_pairs": 3, "max_iterations": 7,
             "tolerance": 0.}
  snapshot = dict(options)
  opt = LbfgsOptimizerInterface(_loss(regime, v, w), [v, w], **options)
  result = regime.minimize(opt)
  assert options == snapshot
  assert result.nit == 7
  assert result.lbfgs_results.position_deltas.shape == (3, 7)
  np.testing.assert_allclose(result.x,
                             reference64_options.position.numpy(), rtol=1e-12)


def test_nan_region_never_assigned_and_nan_start_fails(regime):
  v = regime.variable([0.5, 0.5], dtype=tf.float64)

  def loss():
    # NaN outside the unit disc; the minimum (1, 1) of the quadratic lies
    # outside, so L-BFGS keeps running into the NaN region.
    base = tf.reduce_sum(tf.square(v - 1.))
    return base + tf.sqrt(1. - tf.reduce_sum(tf.square(v)))

  opt = LbfgsOptimizerInterface(regime.tensor(loss), [v], max_iterations=30)
  result = regime.minimize(opt)
  assert np.isfinite(regime.value(v)).all()
  assert np.isfinite(result.fun)
  # The loss at the start, (0.5 - 1)**2 * 2 + sqrt(0.5), in NumPy.
  assert result.fun <= (np.sum(np.square(np.array([0.5, 0.5]) - 1.))
                        + np.sqrt(0.5))
  # A start in the NaN region fails and leaves the variables there (the
  # same optimizer: building one costs a second).
  regime.assign(v, [2., 2.])
  result = regime.minimize(opt)
  assert result.status == 2 and not result.success
  np.testing.assert_array_equal(regime.value(v), [2., 2.])


def test_bounds_match_lbfgsb_chunked_or_not(regime, reference64_bounded):
  v, w = _variables(regime, tf.float64)
  opt = LbfgsOptimizerInterface(
      _loss(regime, v, w), [v, w],
      var_to_bounds={v.ref(): (1.2, None), w.ref(): (None, [[0.5, 0.5],
                                                             [0.5, 0.5]])},
      max_iterations=25)
  result = regime.minimize(opt)
  assert (result.x >= _LOWER).all() and (result.x <= _UPPER).all()
  ref = reference64_bounded
  np.testing.assert_allclose(result.x, ref.position.numpy(), rtol=1e-10,
                             atol=1e-12)
  assert result.nfev == int(ref.num_objective_evaluations)
  regime.assign(v, _START_V)
  regime.assign(w, _START_W)
  points = []
  chunked = regime.minimize(opt, step_callback=points.append)
  assert len(points) == chunked.nit
  np.testing.assert_allclose(chunked.x, result.x, rtol=1e-12, atol=1e-14)


# --- Errors -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["equalities", "inequalities"])
def test_constraints_point_to_scipy(regime, name):
  v, w = _variables(regime)
  with pytest.raises(ValueError, match=name + ".*ScipyOptimizerInterface"):
    LbfgsOptimizerInterface(_loss(regime, v, w), [v, w],
                            **{name: [regime.tensor(lambda: v[0])]})


@pytest.mark.parametrize("kwargs, match", [
    ({"maxiter": 3}, "unknown option.*maxiter"),
    ({"method": "L-BFGS-B"}, "unknown option.*method"),
    ({"iterations_per_call": 0}, "iterations_per_call.*>= 1.*0"),
    ({"dtype": tf.int32}, "dtype must be.*float"),
    ({"dtype": tf.float16}, "dtype must be.*got float16"),
    ({"max_iterations": -1}, "max_iterations.*>= 0.*-1"),
])
def test_bad_options(regime, kwargs, match):
  v, w = _variables(regime)
  with pytest.raises(ValueError, match=match):
    LbfgsOptimizerInterface(_loss(regime, v, w), [v, w], **kwargs)


def test_hessian_estimate_with_bounds_rejected(regime):
  v, w = _variables(regime)
  with pytest.raises(ValueError, match="initial_inverse_hessian_estimate"):
    LbfgsOptimizerInterface(_loss(regime, v, w), [v, w],
                            var_to_bounds=[(v, (0., 1.))],
                            initial_inverse_hessian_estimate=tf.ones([7]))


# --- Eager only -----------------------------------------------------------------


@pytest.mark.slow
def test_jit_compile_matches(reference64):
  # Eager only: XLA (graph mode rejects jit_compile, see test_graph_errors).
  v, w = _variables(Regime("eager"), tf.float64)
  result = LbfgsOptimizerInterface(lambda: _loss_terms(v, w), [v, w],
                                   max_iterations=25,
                                   jit_compile=True).minimize()
  np.testing.assert_allclose(result.x, reference64.position.numpy(),
                             rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_compile_update_matches(reference64):
  # Eager only: counts the XLA calls in the traced tf.function.
  # The option reaches lbfgs_minimize: the solver's update runs under XLA
  # while the loss stays in the graph, on the same path.
  v, w = _variables(Regime("eager"), tf.float64)
  opt = LbfgsOptimizerInterface(lambda: _loss_terms(v, w), [v, w],
                                max_iterations=25, compile_update=True)
  result = opt.minimize()
  assert xla_compiled_calls(opt._resume.concrete_function) == 1  # pylint: disable=protected-access
  np.testing.assert_allclose(result.x, reference64.position.numpy(),
                             rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("_shared_problem", ["eager"], indirect=True)
def test_repeated_minimize_reuses_compiled_function(shared):
  # Eager only: tf.function reuse (graph mode's counterpart, no new ops, is
  # in test_graph_feed_dict_default_session_and_no_new_ops).
  first = shared.opt.minimize()
  compiled = shared.opt._resume.concrete_function  # pylint: disable=protected-access
  second = shared.opt.minimize()  # Continues from where the first ended.
  assert shared.opt._resume.concrete_function is compiled  # pylint: disable=protected-access
  assert second.fun <= first.fun


def test_keras_model_matches_packed_reference():
  # Eager only: Keras 3 models are TF2 objects.
  keras = pytest.importorskip("keras")
  keras.utils.set_random_seed(1)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(32, 2)), tf.float32)
  y = tf.reduce_sum(tf.sin(x), axis=1, keepdims=True)
  model = keras.Sequential([keras.Input((2,)),
                            keras.layers.Dense(4, activation="tanh"),
                            keras.layers.Dense(1)])
  initial = [v.numpy() for v in model.trainable_variables]

  def loss_fn():
    return tf.reduce_mean(tf.square(model(x) - y))

  opt = LbfgsOptimizerInterface(loss_fn, model, max_iterations=15)
  result = opt.minimize()
  # Reference: lbfgs_minimize over the packed model weights by hand.
  shapes = [w.shape for w in initial]
  sizes = [w.size for w in initial]

  def packed_fn(p):
    with tf.GradientTape() as tape:
      tape.watch(p)
      ws = [tf.reshape(t, s) for t, s in zip(tf.split(p, sizes), shapes)]
      h = tf.tanh(x @ ws[0] + ws[1])
      loss = tf.reduce_mean(tf.square(h @ ws[2] + ws[3] - y))
    return loss, tape.gradient(loss, p)

  ref = lbfgs_minimize(packed_fn, tf.constant(np.concatenate(
      [w.ravel() for w in initial])), max_iterations=15,
                       exact_line_search=False)
  np.testing.assert_allclose(result.x, ref.position.numpy(), atol=1e-4)
  assert result.fun == pytest.approx(float(ref.objective_value), rel=1e-4)
  assert float(loss_fn()) == pytest.approx(result.fun, rel=1e-5)


def test_eager_call_errors():
  # Eager only: the errors of eager-mode arguments.
  v, w = _variables(Regime("eager"))
  opt = LbfgsOptimizerInterface(lambda: _loss_terms(v, w), [v, w])
  with pytest.raises(ValueError, match="session"):
    opt.minimize(session=object())
  with pytest.raises(TypeError, match="step_callback must be callable"):
    opt.minimize(step_callback=3)
  with pytest.raises(ValueError, match="var_list is required"):
    LbfgsOptimizerInterface(lambda: _loss_terms(v, w))


# --- Graph only -----------------------------------------------------------------


def _graph_problem(use_resource=True, dtype=tf.float64):
  v = v1.Variable(_START_V, dtype=dtype, name="v", use_resource=use_resource)
  w = v1.Variable(_START_W, dtype=dtype, name="w", use_resource=use_resource)
  target = v1.placeholder(dtype, [3], name="target")
  scale = tf.range(1., 4., dtype=dtype)
  loss = (tf.reduce_sum(scale * tf.square(v - target))
          + tf.reduce_sum(tf.square(w) + 0.1 * w ** 4)
          + 0.5 * tf.reduce_sum(v[:2] * tf.reshape(w[0], [2])) ** 2)
  return v, w, target, loss


@pytest.mark.parametrize("use_resource", [True, False])
def test_graph_feed_dict_default_session_and_no_new_ops(use_resource,
                                                         reference64):
  # Graph only: placeholders fed through feed_dict, legacy RefVariables
  # (use_resource=False), the default session and the graph's op count.
  with tf.Graph().as_default():
    v, w, target, loss = _graph_problem(use_resource)
    opt = LbfgsOptimizerInterface(loss, max_iterations=25)
    points, losses = [], []
    init = v1.global_variables_initializer()
    with pytest.raises(ValueError, match="needs a session"):
      opt.minimize(feed_dict={target: _TARGET_V})
    with v1.Session() as session:
      session.run(init)
      ops_before = len(session.graph.get_operations())
      whole = opt.minimize(session, feed_dict={target: _TARGET_V})
      held = np.concatenate([session.run(v).ravel(),
                             session.run(w).ravel()])
      session.run(init)
      with session.as_default():
        chunked = opt.minimize(feed_dict={target: _TARGET_V},
                               fetches=[loss], step_callback=points.append,
                               loss_callback=losses.append)
      assert len(session.graph.get_operations()) == ops_before
  np.testing.assert_allclose(whole.x, reference64.position.numpy(),
                             rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(held, whole.x)
  assert whole.nfev == int(reference64.num_objective_evaluations)
  np.testing.assert_allclose(chunked.x, whole.x, rtol=1e-12, atol=1e-14)
  assert len(points) == len(losses) == chunked.nit
  assert losses[-1] == pytest.approx(chunked.fun, rel=1e-12)


def test_graph_errors():
  # Graph only: the errors of graph-mode arguments (minimize without a
  # session: test_graph_feed_dict_default_session_and_no_new_ops).
  with tf.Graph().as_default():
    v, w, _, loss = _graph_problem()
    with pytest.raises(ValueError, match="jit_compile"):
      LbfgsOptimizerInterface(loss, jit_compile=True)
    with pytest.raises(ValueError, match="equalities.*ScipyOptimizerInterface"):
      LbfgsOptimizerInterface(loss, equalities=[v[0]])
    unrelated = v1.Variable(1., dtype=tf.float64, name="unrelated")
    with pytest.raises(ValueError, match="does not depend"):
      LbfgsOptimizerInterface(loss, var_list=[unrelated])
    del w


@pytest.mark.slow  # Hundreds of ops imported into the loop: ~1 min on 2 busy cores.
def test_graph_deeper_than_the_recursion_limit():
  # Graph only: the walk from a loss Tensor back to its variables.
  depth = 600
  with tf.Graph().as_default():
    v = v1.Variable([3., -2.], dtype=tf.float64, use_resource=True)
    y = v
    for _ in range(depth):  # A chain of `depth` ops between v and the loss.
      y = y * 1.0
    loss = tf.reduce_sum(tf.square(y - 1.))
    limit = sys.getrecursionlimit()
    # The walk from the loss back to v must not recurse once per op.
    sys.setrecursionlimit(depth // 2)
    try:
      opt = LbfgsOptimizerInterface(loss, max_iterations=10)
    finally:
      sys.setrecursionlimit(limit)
    with v1.Session() as session:
      session.run(v1.global_variables_initializer())
      result = opt.minimize(session)
      np.testing.assert_allclose(session.run(v), [1., 1.], atol=1e-8)
  assert result.success


def _ended(failed, value, gradient):
  """The `LBfgsOptimizerResults` of a run that ended at a 2-D point."""
  return tf_extopt.LBfgsOptimizerResults(
      converged=np.array(False), failed=np.array(failed),
      num_iterations=np.array(4, np.int32),
      num_objective_evaluations=np.array(9, np.int32),
      position=np.array([1., 2.]), objective_value=np.array(value),
      objective_gradient=np.array(gradient),
      position_deltas=np.zeros([3, 2]), gradient_deltas=np.zeros([3, 2]))


def test_failure_messages_say_why():
  # pylint: disable=protected-access
  line_search = LbfgsOptimizerInterface._result(
      _ended(True, 0.5, [0.1, -0.2]), 10)
  assert line_search.status == 2 and not line_search.success
  assert "line search could not decrease the loss" in line_search.message
  for hint in ("gradient is the gradient of the loss", "wrong sign",
               "Dropout", "mixed_float16"):
    assert hint in line_search.message
  for value, gradient in ((np.nan, [0., 0.]), (1., [np.inf, 0.])):
    start = LbfgsOptimizerInterface._result(_ended(True, value, gradient),
                                            10)
    assert start.status == 2
    assert start.message == ("Failed: the loss or gradient is not finite at "
                             "the start point.")
  stopped = LbfgsOptimizerInterface._result(_ended(False, 0.5, [0.1, 0.]), 4)
  assert stopped.status == 1 and "max_iterations=4" in stopped.message
