"""Tests for `tf_extopt.lbfgsb_minimize`.

Every problem is compared with SciPy's L-BFGS-B on the same data: same
minimiser (within the dtype's tolerance) and same active set (which variables
sit at which bound). The problems run as one mixed batch, each member with
its own box, in every regime (eager, tf.function, XLA) and dtype, and with
both representations of the limited-memory matrix (the explicit n x n one
that small problems use, and the compact one); the compiled functions are
built once per solver_regime, dtype and representation and reused. Then: the
unconstrained case against `lbfgs_minimize`, projection of the start, shapes,
warm start, non-finite values, and every bad input with its error; as in
TFP's tests, each of these runs in every regime through the `solver_regime`
fixture. The unit tests of the private linear algebra (dense vs compact
matrix, the small inverses, the subspace step) run eagerly on fixed
tensors.
"""

import contextlib
import functools

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import tf_extopt
from tf_extopt._solver._lbfgsb import _cauchy
from tf_extopt._solver._lbfgsb import _compact
from tf_extopt._solver._lbfgsb import _dense
from tf_extopt._solver import _memory
from tf_extopt._solver._lbfgsb import _small
from tf_extopt._solver import _strategies
from tf_extopt._solver._lbfgsb import _subspace
from tf_extopt import lbfgsb
from tf_extopt import test_problems
from tests._solver_regimes import REGIMES
from tests._solver_regimes import in_regime
from tests._solver_regimes import solver_regime  # pylint: disable=unused-import
from tests._solver_regimes import run
from tests._solver_regimes import to_numpy

N = 4
DTYPES = (np.float32, np.float64)
# The problems here have n = 4 <= 2m, so they take the explicit matrix
# unless the switch is turned down.
REPRESENTATIONS = ("dense", "compact")
# Distance to the SciPy minimiser, and to a bound to count as "at" it. In
# float32 Rosenbrock's gradient carries noise of ~1e-4 near the minimum, so
# its tolerance is 1e-3 and its flat valley (f ~ 1e-5 a distance 1e-2 away)
# gets a looser position check.
ATOL = {np.float32: 2e-3, np.float64: 1e-6}
ROSENBROCK_ATOL = {np.float32: 2e-2, np.float64: 1e-6}
BOUND_ATOL = {np.float32: 1e-5, np.float64: 1e-9}
TOLERANCE = {np.float32: 1e-3, np.float64: 1e-9}
ROSENBROCK, QUADRATIC = 0, 1


def _random_qp(seed, push=1.0):
  """A well-conditioned convex QP `1/2 x'Ax + b'x`, a random box and start."""
  rng = np.random.RandomState(seed)
  q = rng.randn(N, N)
  a = q @ q.T + N * np.eye(N)
  b = push * 4.0 * rng.randn(N)
  lower = -rng.uniform(0.1, 1.0, N)
  upper = rng.uniform(0.1, 1.0, N)
  start = rng.uniform(lower, upper)
  return a, b, lower, upper, start


def _problems():
  """name -> (kind, A, b, lower, upper, start), all float64 NumPy."""
  zeros, eye = np.zeros(N), np.eye(N)
  problems = {
      # x_1 <= 0.8 is active at the optimum, every other bound is not.
      "rosenbrock_one_active": (
          ROSENBROCK, eye, zeros, np.array([-1.5, -1.0, -1.0, -1.0]),
          np.array([0.8, 2.0, 2.0, 2.0]), np.array([-1.2, 1.0, -1.2, 1.0])),
      # The box holds the unconstrained minimiser: no bound active.
      "rosenbrock_inactive": (
          ROSENBROCK, eye, zeros, np.full(N, -2.0), np.full(N, 2.0),
          np.array([-1.2, 1.0, -1.2, 1.0])),
      # One-sided bounds only, one of them active.
      "rosenbrock_lower_only": (
          ROSENBROCK, eye, zeros, np.array([-np.inf, 1.2, -np.inf, -np.inf]),
          np.full(N, np.inf), np.array([-1.2, 1.5, -1.2, 1.0])),
  }
  for seed in range(3):
    a, b, lower, upper, start = _random_qp(seed)
    problems[f"qp_{seed}"] = (QUADRATIC, a, b, lower, upper, start)
  # Every variable at a bound: the unconstrained minimiser is far outside
  # the box in every coordinate, at a different corner for each sign of b.
  a, _, lower, upper, start = _random_qp(10)
  b = 50.0 * np.array([1.0, -1.0, 1.0, -1.0])
  problems["qp_all_at_bounds"] = (QUADRATIC, a, b, lower, upper, start)
  # A fixed variable (lower == upper) and a start outside the box.
  a, b, lower, upper, start = _random_qp(20)
  lower[2] = upper[2] = 0.25
  start = np.array([3.0, -3.0, 0.0, 0.1])
  problems["qp_fixed_and_outside_start"] = (QUADRATIC, a, b, lower, upper,
                                            start)
  return problems


PROBLEMS = _problems()
NAMES = sorted(PROBLEMS)


def _stack(names):
  kinds, a, b, lower, upper, start = zip(*(PROBLEMS[k] for k in names))
  return (np.array(kinds), np.stack(a), np.stack(b), np.stack(lower),
          np.stack(upper), np.stack(start))


def mixed_objective(kinds, a, b):
  """A batch `[B, n] -> [B]` whose member i is Rosenbrock or QP i."""

  def objective(x):
    dtype = x.dtype
    a_ = tf.constant(a, dtype)
    b_ = tf.constant(b, dtype)
    quadratic = (0.5 * tf.reduce_sum(x * tf.linalg.matvec(a_, x), axis=-1)
                 + tf.reduce_sum(b_ * x, axis=-1))
    rosenbrock = test_problems._rosenbrock(x)
    return tf.where(tf.equal(kinds, ROSENBROCK), rosenbrock, quadratic)

  return test_problems.value_and_gradients(objective)


def scipy_solve(name):
  kind, a, b, lower, upper, start = PROBLEMS[name]
  if kind == ROSENBROCK:
    fun = lambda x: (scipy.optimize.rosen(x), scipy.optimize.rosen_der(x))
  else:
    fun = lambda x: (0.5 * x @ a @ x + b @ x, a @ x + b)
  bounds = [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi)
            for lo, hi in zip(lower, upper)]
  return scipy.optimize.minimize(
      fun, start, jac=True, method="L-BFGS-B", bounds=bounds,
      options=dict(ftol=0.0, gtol=1e-10, maxiter=1000, maxls=50))


@functools.lru_cache(maxsize=None)
def scipy_result(name):
  return scipy_solve(name)


def active_set(x, lower, upper, atol):
  """-1 at the lower bound, +1 at the upper bound, 0 inside."""
  return np.where(np.abs(x - lower) <= atol * (1 + np.abs(lower)), -1,
                  np.where(np.abs(x - upper) <= atol * (1 + np.abs(upper)),
                           1, 0))


@contextlib.contextmanager
def representation_in_use(representation):
  """Makes `lbfgsb_minimize` trace with the given matrix representation."""
  saved = lbfgsb.DENSE_RATIO
  lbfgsb.DENSE_RATIO = saved if representation == "dense" else 0
  try:
    yield
  finally:
    lbfgsb.DENSE_RATIO = saved


@functools.lru_cache(maxsize=None)
def solver(solver_regime, dtype, representation):
  """The mixed-batch solver for a solver_regime, dtype and representation."""
  kinds, a, b, lower, upper, _ = _stack(NAMES)
  function = mixed_objective(kinds, a, b)

  def call(x):
    return tf_extopt.lbfgsb_minimize(
        function, x, lower_bounds=lower.astype(dtype),
        upper_bounds=upper.astype(dtype), tolerance=TOLERANCE[dtype],
        max_iterations=200)

  call = in_regime(solver_regime, call)

  def call_with_representation(x):
    with representation_in_use(representation):
      return call(x)

  return call_with_representation


@functools.lru_cache(maxsize=None)
def mixed_batch_results(solver_regime, dtype, representation):
  start = _stack(NAMES)[-1].astype(dtype)
  results = solver(solver_regime, dtype, representation)(tf.constant(start))
  return tf.nest.map_structure(lambda t: t.numpy(), results)


def check_member(results, index, name, dtype):
  kind, a, b, lower, upper, start = PROBLEMS[name]
  reference = scipy_result(name)
  assert reference.success, reference.message
  position = results.position[index]
  assert not results.failed[index], name
  assert np.all(position >= lower.astype(dtype))
  assert np.all(position <= upper.astype(dtype))
  atol = (ROSENBROCK_ATOL if kind == ROSENBROCK else ATOL)[dtype]
  np.testing.assert_allclose(position, reference.x, atol=atol, err_msg=name)
  np.testing.assert_array_equal(
      active_set(position, lower, upper, BOUND_ATOL[dtype]),
      active_set(reference.x, lower, upper, 1e-9), err_msg=name)


# Each combination compiles L-BFGS-B once (about 15 s on a busy 2-core CPU).
# The dense representation runs every regime and dtype (test_regimes_agree
# needs them all); the compact one runs each regime once and each dtype, a
# cover rather than the full product.
_COMPACT_CASES = (("eager", np.float32), ("function", np.float64),
                  ("xla", np.float32))
CASES = [pytest.param(solver_regime, dtype, "dense",
                      id="%s-%s-dense" % (solver_regime, np.dtype(dtype).name))
         for solver_regime in REGIMES for dtype in DTYPES] + [
             pytest.param(solver_regime, dtype, "compact",
                          id="%s-%s-compact" % (solver_regime,
                                                np.dtype(dtype).name))
             for solver_regime, dtype in _COMPACT_CASES]


@pytest.mark.parametrize("solver_regime, dtype, representation", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_same_minimiser_and_active_set_as_scipy(name, solver_regime, dtype,
                                                representation):
  """Each problem, as one member of the mixed batch, against SciPy."""
  results = mixed_batch_results(solver_regime, dtype, representation)
  index = NAMES.index(name)
  check_member(results, index, name, dtype)
  if dtype == np.float64:
    assert results.converged[index], name


@pytest.mark.parametrize("solver_regime, dtype, representation", CASES)
def test_mixed_batch_all_members(solver_regime, dtype, representation):
  """The whole mixed batch: every member solved, each with its own box."""
  results = mixed_batch_results(solver_regime, dtype, representation)
  for index, name in enumerate(NAMES):
    check_member(results, index, name, dtype)
  assert not results.failed.any()
  # Converged means a stopping test fired: the projected gradient one, or no
  # change at all in x or f (the zero default x/f tolerances) once roundoff
  # stalls the last digits. Either way the projected gradient is small.
  assert results.converged.all()
  _, _, _, lower, upper, _ = _stack(NAMES)
  x, g = results.position, results.objective_gradient
  projected = np.clip(x - g, lower.astype(dtype), upper.astype(dtype)) - x
  # (float32: Rosenbrock's gradient is 400 x (x^2 - y) + ..., whose roundoff
  # alone is ~1e-4, amplified along the valley before f stops changing.)
  assert np.max(np.abs(projected)) <= (1e-6 if dtype == np.float64 else 5e-2)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_regimes_agree(dtype):
  """tf.function and XLA follow eager's path (XLA up to fused roundoff)."""
  eager = mixed_batch_results("eager", dtype, "dense")
  function = mixed_batch_results("function", dtype, "dense")
  xla = mixed_batch_results("xla", dtype, "dense")
  # Graph-mode kernels may round differently from eager ones; in float32
  # Rosenbrock's flat valley turns that into visible differences.
  np.testing.assert_allclose(function.position, eager.position,
                             atol=ROSENBROCK_ATOL[dtype])
  np.testing.assert_allclose(xla.position, eager.position,
                             atol=ROSENBROCK_ATOL[dtype])


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_compiled_update_follows_the_same_path(representation):
  """`compile_update=True` in a tf.function: the same path as without it."""
  kinds, a, b, lower, upper, start = _stack(NAMES)
  function = mixed_objective(kinds, a, b)
  solve = tf.function(lambda x: tf_extopt.lbfgsb_minimize(
      function, x, lower_bounds=lower, upper_bounds=upper,
      tolerance=TOLERANCE[np.float64], max_iterations=200,
      compile_update=True))
  with representation_in_use(representation):
    results = solve(tf.constant(start))
  expected = mixed_batch_results("function", np.float64, representation)
  np.testing.assert_allclose(results.position.numpy(), expected.position,
                             atol=1e-8)
  np.testing.assert_array_equal(results.converged.numpy(), expected.converged)


def _random_memory(batch, num_pairs, n, counts, seed):
  """A memory holding `counts[b]` random pairs with s.y > 0 per member."""
  rng = np.random.RandomState(seed)
  memory = _memory.empty(batch, num_pairs, n, tf.float64)
  for step in range(max(counts)):
    s = rng.randn(batch, n)
    y = s * rng.uniform(0.5, 2.0, (batch, n)) + 0.1 * rng.randn(batch, n)
    memory = _memory.push(memory, tf.constant(s), tf.constant(y),
                          tf.constant(step < np.array(counts)))
  return memory


@pytest.mark.parametrize("num_pairs,n", [(3, 5), (4, 2)])
def test_dense_matrix_equals_compact_representation(num_pairs, n):
  """The explicit BFGS matrix is the compact one, theta I - W M W^T."""
  counts = [0, 1, num_pairs - 1, num_pairs, num_pairs]
  memory = _random_memory(len(counts), num_pairs, n, counts, seed=3)
  theta, matrix = _dense.bfgs_matrix(memory)
  compact = _compact.compact_form(memory)
  w, m = compact.w.numpy(), compact.m.numpy()
  expected = (compact.theta.numpy()[:, None, None] * np.eye(n)
              - w @ m @ np.transpose(w, [0, 2, 1]))
  np.testing.assert_allclose(theta.numpy(), compact.theta.numpy())
  np.testing.assert_allclose(matrix.numpy(), expected, rtol=1e-9, atol=1e-9)
  assert compact.ok.numpy().all()


def test_spd_inverse_and_its_failure_flag():
  rng = np.random.RandomState(0)
  a = rng.randn(4, 6, 6)
  a = a @ np.transpose(a, [0, 2, 1]) + 0.1 * np.eye(6)
  a[1] = -a[1]                          # negative definite
  a[2, 3, :] = a[2, :, 3] = 0.0         # singular
  inverse, ok = _compact.spd_inverse(tf.constant(a))
  np.testing.assert_array_equal(ok.numpy(), [True, False, False, True])
  for i in (0, 3):
    np.testing.assert_allclose(inverse.numpy()[i], np.linalg.inv(a[i]),
                               rtol=1e-9, atol=1e-12)


def mixed_objective_from_tensors(kinds, a, b):
  """As `mixed_objective`, with the data as (traced) tensors."""

  def objective(x):
    quadratic = (0.5 * tf.reduce_sum(x * tf.linalg.matvec(a, x), axis=-1)
                 + tf.reduce_sum(b * x, axis=-1))
    return tf.where(tf.equal(kinds, ROSENBROCK),
                    test_problems._rosenbrock(x), quadratic)

  return test_problems.value_and_gradients(objective)


@tf.function(input_signature=[
    tf.TensorSpec([1], tf.int64), tf.TensorSpec([1, N, N], tf.float64)]
    + [tf.TensorSpec([1, N], tf.float64)] * 4)
def solve_one(kinds, a, b, lower, upper, start):
  return tf_extopt.lbfgsb_minimize(
      mixed_objective_from_tensors(kinds, a, b), start, lower, upper,
      tolerance=TOLERANCE[np.float64], max_iterations=200)


@functools.lru_cache(maxsize=None)
def solve_one_in(solver_regime):
  """`solve_one` in `solver_regime`, traced once (same shapes for all)."""
  return in_regime(solver_regime, solve_one)


@pytest.mark.parametrize("name", NAMES)
def test_alone_equals_in_batch_and_tracks_scipy_evaluations(name,
                                                            solver_regime):
  """A member's path does not depend on the batch; counts track SciPy's."""
  data = [tf.constant(v) for v in _stack([name])]
  results = solve_one_in(solver_regime)(*data)
  batch = mixed_batch_results(solver_regime, np.float64, "dense")
  index = NAMES.index(name)
  # XLA vectorises a batch of 1 and a batch of 9 differently, so their
  # rounding (not their path) differs.
  np.testing.assert_allclose(results.position.numpy()[0],
                             batch.position[index],
                             atol=1e-8 if solver_regime == "xla" else 1e-12)
  assert results.converged.numpy()[0]
  reference = scipy_result(name)
  # SciPy stops a little later (gtol 1e-10); ours may use a few more on the
  # first iteration (no unit cap on the first step).
  assert results.num_objective_evaluations.numpy() <= 1.5 * reference.nfev + 3


def test_unbounded_matches_lbfgs_minimize(solver_regime):
  """No bounds (None, or all infinite): exactly `lbfgs_minimize`. In a batch
  with bounded members, an unbounded member takes the same path."""
  function = test_problems.value_and_gradients(test_problems._rosenbrock)
  start = tf.constant(np.array([[-1.2, 1.0, -1.2, 1.0],
                                [0.5, 0.5, 0.5, 0.5]]))
  plain = run(solver_regime, lambda x: tf_extopt.lbfgs_minimize(
      function, x, tolerance=1e-9, max_iterations=200), start)
  for lower, upper in ((None, None), (-np.inf, np.inf),
                       (np.full(N, -np.inf), None)):
    bounded = run(solver_regime, lambda x: tf_extopt.lbfgsb_minimize(
        function, x, lower, upper, tolerance=1e-9, max_iterations=200),
                  start)
    np.testing.assert_array_equal(bounded.position, plain.position)
    assert (bounded.num_objective_evaluations
            == plain.num_objective_evaluations)
    assert bounded.num_iterations == plain.num_iterations
    np.testing.assert_array_equal(bounded.converged, plain.converged)

  mixed = run(solver_regime, lambda x: tf_extopt.lbfgsb_minimize(
      function, x, [np.full(N, -np.inf), np.full(N, -1.5)],
      [np.full(N, np.inf), np.full(N, 0.8)], tolerance=1e-9,
      max_iterations=200), start)
  np.testing.assert_allclose(mixed.position[0], plain.position[0],
                             atol=1e-12)
  assert mixed.converged.all()
  assert mixed.position[1, 0] == 0.8


def test_start_outside_box_is_projected(solver_regime):
  """Starting outside the box is starting from its projection."""
  _, _, _, lower, upper, start = _stack(NAMES)
  outside = start + np.where(np.arange(N) % 2 == 0, 10.0, -10.0)
  assert np.any(outside < lower) and np.any(outside > upper)
  solve = solver(solver_regime, np.float64, "dense")
  far = solve(tf.constant(outside))
  clipped = solve(tf.constant(np.clip(outside, lower, upper)))
  np.testing.assert_array_equal(far.position.numpy(),
                                clipped.position.numpy())
  assert (far.num_objective_evaluations.numpy()
          == clipped.num_objective_evaluations.numpy())


def test_bounds_broadcast_over_batch_shape(solver_regime):
  """Position [2, 3, n]; bounds [n], [3, n] (per member of the inner axis)
  and scalars all broadcast; the function sees the position's shape."""
  target = np.linspace(-2.0, 2.0, N)
  seen = []

  def function(x):
    seen.append(x.shape)
    value = tf.reduce_sum((x - target) ** 2, axis=-1)
    return value, 2.0 * (x - target)

  start = np.zeros((2, 3, N))
  upper = np.stack([np.full(N, 0.5), np.full(N, 1.0), np.full(N, 3.0)])
  results = run(solver_regime, lambda x: tf_extopt.lbfgsb_minimize(
      function, x, -1.0, upper, tolerance=1e-10), start)
  expected = np.clip(target, -1.0, upper)
  np.testing.assert_allclose(results.position,
                             np.broadcast_to(expected, (2, 3, N)), atol=1e-9)
  assert results.converged.shape == (2, 3)
  assert seen and all(shape == (2, 3, N) for shape in seen)


def test_list_bounds_with_none_entries(solver_regime):
  """SciPy-style per-variable `None` means no bound on that variable."""
  function = test_problems.value_and_gradients(
      lambda x: tf.reduce_sum((x - 2.0) ** 2, axis=-1))
  results = run(solver_regime, lambda x: tf_extopt.lbfgsb_minimize(
      function, x, lower_bounds=[0.0, None, 0.0],
      upper_bounds=[1.0, None, 5.0], tolerance=1e-10), np.zeros(3))
  np.testing.assert_allclose(results.position, [1.0, 2.0, 2.0], atol=1e-9)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["function", "xla"])
def test_dynamic_batch_shape(jit_compile):
  kinds, a, b, lower, upper, start = _stack(["qp_0", "qp_1"])
  function = test_problems.value_and_gradients(
      lambda x: 0.5 * tf.reduce_sum(x * tf.linalg.matvec(a[0], x), axis=-1)
      + tf.reduce_sum(b[0] * x, axis=-1))

  @tf.function(jit_compile=jit_compile,
               input_signature=[tf.TensorSpec([None, N], tf.float64)] * 3)
  def solve(x, lower, upper):
    return tf_extopt.lbfgsb_minimize(function, x, lower, upper,
                                     tolerance=1e-10)

  for size in (1, 3):
    lo = np.resize(lower, (size, N))
    hi = np.resize(upper, (size, N))
    x0 = np.resize(start, (size, N))
    results = solve(tf.constant(x0), tf.constant(lo), tf.constant(hi))
    for i in range(size):
      reference = scipy.optimize.minimize(
          lambda x: (0.5 * x @ a[0] @ x + b[0] @ x, a[0] @ x + b[0]), x0[i],
          jac=True, method="L-BFGS-B", bounds=list(zip(lo[i], hi[i])),
          options=dict(ftol=0, gtol=1e-10))
      np.testing.assert_allclose(results.position.numpy()[i], reference.x,
                                 atol=1e-7)


def test_warm_start_in_two_pieces_equals_one_run(solver_regime):
  kinds, a, b, lower, upper, start = _stack(NAMES)
  function = mixed_objective(kinds, a, b)
  kwargs = dict(lower_bounds=lower, upper_bounds=upper, tolerance=1e-9)

  def solve(x, max_iterations):
    return tf_extopt.lbfgsb_minimize(function, x,
                                     max_iterations=max_iterations, **kwargs)

  def resume(previous, max_iterations):
    return tf_extopt.lbfgsb_minimize(function, None,
                                     previous_optimizer_results=previous,
                                     max_iterations=max_iterations, **kwargs)

  solve = in_regime(solver_regime, solve)
  whole = to_numpy(solve(tf.constant(start), tf.constant(40)))
  first = solve(tf.constant(start), tf.constant(15))
  second = to_numpy(in_regime(solver_regime, resume)(first, tf.constant(40)))
  first = to_numpy(first)
  assert first.num_iterations == 15
  np.testing.assert_allclose(second.position, whole.position, atol=1e-12)
  assert second.num_objective_evaluations >= whole.num_objective_evaluations


def test_fields_match_lbfgs_minimize(solver_regime):
  assert tf_extopt.LBfgsOptimizerResults._fields == (
      "converged", "failed", "num_iterations", "num_objective_evaluations",
      "position", "objective_value", "objective_gradient", "position_deltas",
      "gradient_deltas")
  function = test_problems.value_and_gradients(
      lambda x: tf.reduce_sum(x ** 2, axis=-1))
  results = run(solver_regime, lambda x: tf_extopt.lbfgsb_minimize(
      function, x, 0.5, 2.0, num_correction_pairs=4),
                np.ones([2, 3], np.float32))
  assert isinstance(results, tf_extopt.LBfgsOptimizerResults)
  assert results.position_deltas.shape == (4, 2, 3)
  assert results.converged.shape == (2,)
  np.testing.assert_allclose(results.position, 0.5)


def test_non_finite_trial_shrinks_and_non_finite_start_fails(solver_regime):
  """Outside x < 1.5 the objective is NaN; the box allows up to 3."""

  def function(x):
    value = tf.reduce_sum((x - 2.0) ** 2, axis=-1)
    value = tf.where(tf.reduce_any(x > 1.5, axis=-1),
                     tf.constant(np.nan, x.dtype), value)
    return value, 2.0 * (x - 2.0)

  results = run(solver_regime, lambda x: tf_extopt.lbfgsb_minimize(
      function, x, 0.0, 3.0, tolerance=1e-8, max_iterations=30),
                np.array([[0.0, 0.0], [np.nan, 0.0]], np.float32))
  # The NaN trials past 1.5 shrank the steps: the first member reached the
  # lowest finite value, 0.5 at (1.5, 1.5), instead of failing at once.
  assert np.all(results.position[0] <= 1.5)
  np.testing.assert_allclose(results.objective_value[0], 0.5, rtol=1e-5)
  assert results.num_iterations >= 1
  # From there every step is NaN and the gradient is not zero: no search
  # can decrease the objective, so the member fails where it stands (it
  # is no solution), as SciPy's L-BFGS-B ends in ABNORMAL_TERMINATION.
  assert results.failed[0] and not results.converged[0]
  assert results.failed[1]


# --- Bad input -------------------------------------------------------------

def _quadratic(x):
  return tf.reduce_sum(x ** 2, axis=-1), 2.0 * x


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lower_bounds=[1.0, 2.0, 3.0], upper_bounds=[2.0, 1.0, 4.0]),
     ValueError, r"`lower_bounds` must be <= `upper_bounds`.*index \(1,\)"),
    (dict(lower_bounds=np.zeros(4)), ValueError,
     r"`lower_bounds` of shape \(4,\) does not broadcast.*\(2, 3\)"),
    (dict(upper_bounds=np.zeros((5, 2, 3))), ValueError,
     r"`upper_bounds` of shape \(5, 2, 3\) does not broadcast"),
    (dict(lower_bounds=[0.0, np.nan, 0.0]), ValueError,
     r"`lower_bounds` must not contain NaN"),
    (dict(lower_bounds=np.inf), ValueError,
     r"`lower_bounds` must not contain inf"),
    (dict(upper_bounds=-np.inf), ValueError,
     r"`upper_bounds` must not contain -inf"),
    (dict(upper_bounds="high"), TypeError, r"`upper_bounds` must be None or"),
    (dict(lower_bounds=tf.constant([True, False, True])), TypeError,
     r"`lower_bounds` must be a real Tensor"),
    (dict(tolerance=-1.0), ValueError, r"`tolerance` must be non-negative"),
    (dict(num_correction_pairs=0), ValueError,
     r"`num_correction_pairs` must be >= 1"),
    (dict(max_line_search_iterations=1.5), TypeError,
     r"`max_line_search_iterations` must be a Python integer"),
    (dict(stopping_condition=3), TypeError,
     r"`stopping_condition` must be callable"),
])
def test_bad_input_raises_at_once(kwargs, error, match, solver_regime):
  """Static bad input raises at the call, or while tracing: in every regime."""
  with pytest.raises(error, match=match):
    run(solver_regime, lambda: tf_extopt.lbfgsb_minimize(
        _quadratic, tf.ones([2, 3], tf.float64), **kwargs))


def test_bad_positions_and_functions(solver_regime):
  with pytest.raises(ValueError, match="Exactly one of `initial_position`"):
    run(solver_regime,
        lambda: tf_extopt.lbfgsb_minimize(_quadratic, None, 0.0, 1.0))
  with pytest.raises(TypeError, match="`initial_position` must have a "
                     "floating dtype"):
    run(solver_regime, lambda: tf_extopt.lbfgsb_minimize(
        _quadratic, tf.ones([3], tf.int32), 0.0, 1.0))
  with pytest.raises(TypeError, match="returned a value of dtype float32"):
    run(solver_regime, lambda: tf_extopt.lbfgsb_minimize(
        lambda x: (tf.zeros([], tf.float32), x), tf.ones([3], tf.float64),
        0.0, 1.0))


def test_lower_above_upper_in_graph_mode_asserts():
  @tf.function(input_signature=[tf.TensorSpec([3], tf.float64)] * 2)
  def solve(lower, upper):
    return tf_extopt.lbfgsb_minimize(_quadratic, tf.ones([3], tf.float64),
                                     lower, upper).position

  np.testing.assert_allclose(solve(tf.zeros(3, tf.float64),
                                   tf.ones(3, tf.float64)), 0.0)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="`lower_bounds` must be <= `upper_bounds`"):
    solve(tf.constant([0.0, 2.0, 0.0], tf.float64), tf.ones(3, tf.float64))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="`lower_bounds` must not contain NaN or inf"):
    solve(tf.constant([0.0, np.inf, 0.0], tf.float64),
          tf.constant([1.0, np.inf, 1.0], tf.float64))


def test_invalid_bounds_under_xla_fail_at_the_start():
  """Under XLA the assertions above do not run: a member whose bounds are
  invalid at run time fails where it started, and the others are solved."""

  @tf.function(jit_compile=True)
  def solve(start, lower, upper):
    return tf_extopt.lbfgsb_minimize(_quadratic, start, lower, upper)

  start = np.full([5, 3], 0.5)
  lower = np.array([[0.0, 0.0, 0.0],      # valid, x_1 fixed at 0
                    [0.0, 2.0, 0.0],      # lower > upper
                    [0.0, np.nan, 0.0],   # NaN
                    [np.inf, 0.0, 0.0],   # lower bound of +inf
                    [-1.0, -1.0, -1.0]])  # valid, interior minimum
  upper = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0],
                    [np.inf, 1.0, 1.0], [1.0, 1.0, 1.0]])
  results = to_numpy(solve(tf.constant(start), tf.constant(lower),
                           tf.constant(upper)))
  np.testing.assert_array_equal(results.failed,
                                [False, True, True, True, False])
  np.testing.assert_array_equal(results.converged,
                                [True, False, False, False, True])
  # No step taken, not even the projection onto the (meaningless) box.
  np.testing.assert_array_equal(results.position[1:4], start[1:4])
  assert np.all(results.position[[0, 4]] >= lower[[0, 4]])
  assert np.all(results.position[[0, 4]] <= upper[[0, 4]])


def test_quasi_definite_inverse_and_its_failure_flag():
  rng = np.random.RandomState(1)
  k = 4
  p = rng.randn(3, k, k)
  p = p @ np.transpose(p, [0, 2, 1]) + 0.1 * np.eye(k)
  c = rng.randn(3, k, k)
  a = rng.randn(3, k, k)
  a = a @ np.transpose(a, [0, 2, 1])
  p[2] = -p[2]                          # P not positive definite
  inverse, ok = _compact.quasi_definite_inverse(
      tf.constant(p), tf.constant(c), tf.constant(a))
  np.testing.assert_array_equal(ok.numpy(), [True, True, False])
  for i in (0, 1):
    matrix = np.block([[-p[i], c[i].T], [c[i], a[i]]])
    np.testing.assert_allclose(inverse.numpy()[i], np.linalg.inv(matrix),
                               rtol=1e-8, atol=1e-10)


def test_quasi_definite_inverse_with_a_diagonal_block(solver_regime):
  """`diagonal_p` (the compact form's `D`) inverts the same matrix."""
  rng = np.random.RandomState(2)
  k = 5
  p = rng.uniform(0.5, 2.0, (3, k))
  c = rng.randn(3, k, k)
  a = rng.randn(3, k, k)
  a = a @ np.transpose(a, [0, 2, 1])
  p[2, 1] = -1.0                        # P not positive definite
  inverse, ok = run(solver_regime, functools.partial(
      _compact.quasi_definite_inverse, diagonal_p=True), p, c, a)
  np.testing.assert_array_equal(ok, [True, True, False])
  for i in (0, 1):
    matrix = np.block([[-np.diag(p[i]), c[i].T], [c[i], a[i]]])
    np.testing.assert_allclose(inverse[i], np.linalg.inv(matrix),
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("terms", [3, _small.MAX_FUSED_TERMS + 1])
def test_small_products_match_numpy(solver_regime, terms):
  """Both ways `_small` multiplies (broadcast and `dot`), all transposes."""
  rng = np.random.RandomState(terms)
  a, b = rng.randn(4, 3, terms), rng.randn(4, terms, 2)
  v = rng.randn(4, terms)

  def products(a, b, v):
    a_t = tf.linalg.matrix_transpose(a)
    b_t = tf.linalg.matrix_transpose(b)
    return (_small.matmul(a, b), _small.matmul(a_t, b, transpose_a=True),
            _small.matmul(a, b_t, transpose_b=True),
            _small.matmul(a_t, b_t, transpose_a=True, transpose_b=True),
            _small.matvec(a, v), _small.matvec(a_t, v, transpose_a=True))

  results = run(solver_regime, products, a, b, v)
  for product in results[:4]:
    np.testing.assert_allclose(product, a @ b, rtol=1e-12)
  for product in results[4:]:
    np.testing.assert_allclose(product, np.einsum("bik,bk->bi", a, v),
                               rtol=1e-12)


def test_compact_cauchy_point_equals_the_sorted_one(solver_regime):
  """Next breakpoint by minimum per trip = SciPy's sorted visit.

  Against `_dense.cauchy_point`, which sorts the breakpoints and recomputes
  `f'`, `f''` from the explicit matrix: same point and free set, with ties
  between breakpoints, infinite bounds, variables held at a bound and
  members with and without pairs; `c` is `W^T (x^c - x)`.
  """
  batch, n, num_pairs = 6, 12, 4
  counts = [0, 1, 4, 4, 3, 4]
  memory = _random_memory(batch, num_pairs, n, counts, seed=8)
  rng = np.random.RandomState(9)
  x = rng.uniform(-1.0, 1.0, (batch, n))
  g = rng.randn(batch, n) * rng.uniform(0.5, 3.0, (batch, 1))
  lower = np.where(rng.uniform(size=(batch, n)) < 0.2, -np.inf, -1.2)
  upper = np.full((batch, n), 1.2)
  x[rng.uniform(size=(batch, n)) < 0.15] = 1.2        # at the upper bound
  # Equal breakpoints: the same distance to the bound and the same slope.
  x[:, 1] = x[:, 2] = 0.3
  g[:, 1] = g[:, 2] = -2.0

  def both(x, g, lower, upper):
    compact = _compact.compact_form(memory)
    cauchy = _cauchy.generalized_cauchy_point(x, g, lower, upper, compact)
    theta, matrix = _dense.bfgs_matrix(memory)
    dense = _dense.cauchy_point(x, g, lower, upper, theta, matrix)
    return cauchy, dense.x, dense.free, compact.w

  cauchy, dense_x, dense_free, w = run(solver_regime, both, x, g, lower, upper)
  np.testing.assert_allclose(cauchy.x, dense_x, rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(cauchy.free, dense_free)
  np.testing.assert_allclose(
      cauchy.c, np.einsum("bnk,bn->bk", w, cauchy.x - x), atol=1e-10)
  # Some members stop between breakpoints after passing several.
  passed = (~cauchy.free).sum(axis=-1)
  assert (passed >= 2).any() and cauchy.free.any(axis=-1).all()


@pytest.mark.parametrize("n", [4, 12])             # dense, compact (m = 4)
@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_directions_in_chunks_equal_the_whole_batch(solver_regime, n, share,
                                                    monkeypatch):
  """Only the members that ask get a direction, and the same one.

  A batch of 70 (two whole chunks and a padded third) against the same
  directions computed for the whole batch at once; members not asking get
  zero.
  """
  batch = _strategies.CHUNKED_MIN_BATCH + 6
  counts = np.arange(batch) % 5
  memory = _random_memory(batch, 4, n, counts, seed=10)
  rng = np.random.RandomState(11)
  x = rng.uniform(-1.0, 1.0, (batch, n))
  g = rng.randn(batch, n)
  lower = np.where(rng.uniform(size=(batch, n)) < 0.2, -np.inf, -1.2)
  upper = np.full((batch, n), 1.2)
  upper[:3] = np.inf
  lower[:3] = -np.inf                   # unbounded members
  where = rng.uniform(size=batch) < share

  def directions(x, g, lower, upper, where):
    strategy = _strategies.bounded_strategy(lower, upper, lbfgsb.DENSE_RATIO)
    return strategy.direction(x, g, memory, where)

  chunked = run(solver_regime, directions, x, g, lower, upper, where)
  # Every member's direction at once.
  monkeypatch.setattr(_strategies, "CHUNKED_MIN_BATCH", np.inf)
  whole = run(solver_regime, directions, x, g, lower, upper, where)
  np.testing.assert_allclose(chunked[where], whole[where], rtol=1e-12,
                             atol=1e-14)
  np.testing.assert_array_equal(chunked[~where], 0.0)
  if share > 0:                         # the comparison compared something
    assert np.isfinite(whole[where]).all() and (whole[where] != 0).any()


@pytest.mark.parametrize("n", [4, 12])
def test_solves_in_chunks_take_the_same_iterates(n, monkeypatch):
  """A batch solved with chunked directions: same points, same evaluations."""
  batch = _strategies.CHUNKED_MIN_BATCH + 6
  rng = np.random.RandomState(12)
  start = rng.uniform(-2.0, 2.0, (batch, n))
  lower = rng.uniform(-2.5, -0.5, (batch, n))
  upper = rng.uniform(0.3, 1.5, (batch, n))
  function = test_problems.value_and_gradients(test_problems._rosenbrock)

  def solve(start, lower, upper):
    return tf_extopt.lbfgsb_minimize(function, start, lower, upper,
                                     num_correction_pairs=4, max_iterations=60)

  chunked = run("function", solve, start, lower, upper)
  monkeypatch.setattr(_strategies, "CHUNKED_MIN_BATCH", np.inf)
  whole = run("function", solve, start, lower, upper)
  np.testing.assert_allclose(chunked.position, whole.position, rtol=1e-12,
                             atol=1e-14)
  assert chunked.num_objective_evaluations == whole.num_objective_evaluations
  np.testing.assert_array_equal(chunked.converged, whole.converged)


@pytest.mark.parametrize("counts", [[0, 1, 3, 4], [4, 4, 2, 4]])
def test_compact_subspace_step_solves_the_reduced_newton_system(counts):
  """`compact_newton_step` solves Z^T B Z du = -Z^T (g + B (x^c - x))."""
  n, num_pairs = 9, 4
  memory = _random_memory(len(counts), num_pairs, n, counts, seed=5)
  rng = np.random.RandomState(6)
  x = tf.constant(rng.uniform(-1.0, 1.0, (len(counts), n)))
  g = tf.constant(rng.randn(len(counts), n))
  # Tight boxes on the even variables (reached at the Cauchy point), far
  # bounds on the odd ones (free there).
  width = np.where(np.arange(n) % 2 == 0, 1e-3, 1e3)
  lower = x - tf.constant(width)
  upper = x + tf.constant(width)
  compact = _compact.compact_form(memory)
  cauchy = _cauchy.generalized_cauchy_point(x, g, lower, upper, compact)
  du, ok = _subspace.compact_newton_step(x, g, compact, cauchy)
  _, matrix = _dense.bfgs_matrix(memory)
  assert ok.numpy().all()
  # Some variables reach their bound at the Cauchy point, some stay free.
  assert cauchy.free.numpy().any(axis=-1).all()
  assert not cauchy.free.numpy().all(axis=-1).any()
  for b in range(len(counts)):
    free = cauchy.free.numpy()[b]
    reduced = matrix.numpy()[b][np.ix_(free, free)]
    r = -(g.numpy()[b] + matrix.numpy()[b] @ (cauchy.x.numpy()[b]
                                               - x.numpy()[b]))
    np.testing.assert_allclose(reduced @ du.numpy()[b][free], r[free],
                               rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(du.numpy()[b][~free], 0.0)
