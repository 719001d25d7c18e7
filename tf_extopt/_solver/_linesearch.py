"""Batched Moré–Thuente line search, written as a one-evaluation state machine.

This is the strong-Wolfe line search of Moré and Thuente (1994), the
``dcsrch``/``dcstep`` pair of MINPACK-2 that SciPy's L-BFGS-B also uses, recast
so that every batch member advances by exactly one trial per call. The caller
owns the loop and the objective: it evaluates the objective at
``position + state.step * direction`` for all members at once, and passes the
value and directional derivative to `step`. Members that finish early simply
stop being fed; no member ever waits for another and there is no inner loop.

The interface (what a replacement line search must provide):

* ``init(initial_step, value, slope, max_step, min_step=None,
  refine_tolerance=None) -> state`` starts a search from ``phi(0) = value``,
  ``phi'(0) = slope < 0``, first trial ``initial_step``.
* ``step(state, value, slope, is_finite, final=None) -> (state, status,
  moved)`` consumes the objective at ``unpack(state).step`` and proposes the
  next trial.
  ``status`` is ``CONTINUE``, ``CONVERGED`` (strong Wolfe holds at the trial
  just evaluated) or ``WARNING`` (no further progress is possible; the best
  point is ``state.best_step``). ``moved`` says the trial became the new best
  point, so the caller can keep the gradient that goes with it.
* ``unpack(state) -> LineSearchState`` gives named read access to the
  fields (``pack`` is its inverse).
* ``refine_tolerance(n, m, exact=None)`` chooses ``init``'s
  ``refine_tolerance`` (see "Refinement" below), and ``noise_level(value)``
  is the rounding noise under which two objective values count as equal
  (see "Values at the limit of precision").

The state itself is one ``[K, B]`` tensor (``K`` fields stacked, booleans and
counters stored as 0/1 and whole numbers in the value dtype): XLA on CPU
compiles each separately returned ``[B]`` field to its own kernel plus a copy
at the loop boundary, and a stacked state turns the whole update into a
handful of fused kernels per trip. `step` selects the new state field by
field and stacks it last, so that what a caller unpacks from it is the
field itself (see the comment there).

Notation map (paper / MINPACK -> code): ``stp`` -> ``step``; ``stx, fx, gx``
-> ``best_step, best_value, best_slope`` (the step with the least value of the
auxiliary function, Moré–Thuente's ``alpha_l``); ``sty, fy, gy`` ->
``other_step, other_value, other_slope`` (the other end point, ``alpha_u``);
``brackt`` -> ``bracketed``; ``stage`` 1 -> ``stage_one``; ``stmin, stmax`` ->
``lower, upper`` (the interval the next trial must lie in).

Refinement (optional, ``init(..., refine_tolerance=t)``; a deviation from
MINPACK). Moré–Thuente accepts the first strong-Wolfe trial, which on a
quadratic leaves the step short of, or past, the line minimum, and L-BFGS
then loses the conjugacy that exact steps give it: more iterations, which is
what `max_iterations` counts. So when a trial ``a`` has sufficient decrease
(``fa <= f0 + ftol a g0``; Wolfe or not: the first iteration's trial is a
guess), the quadratic through ``phi(0) = f0``, ``phi'(0) = g0`` and
``phi'(a) = ga`` is checked against the value ``phi(a) = fa``. Its
prediction is the trapezoidal rule, ``fa ~ f0 + a (g0 + ga) / 2``, whose
error is exactly the cubic term of the Hermite cubic through the four data
(``-c3 a^3 / 2``). If::

    |fa - f0 - a (g0 + ga) / 2| <= t * (f0 - fa)      (trusted)
    ga != 0, and the caller's stopping test fails at a ("final")

the search spends one more trial at the model's minimiser (the secant
step)::

    a* = a g0 / (g0 - ga)         (taken only when positive)

and ends there: ``a*`` is taken when ``phi(a*) <= fa`` (its gradient is then
the one returned), otherwise the search ends with ``WARNING`` and ``a`` as the
best point, whose gradient the caller kept because ``moved`` was set. On a
quadratic ``a*`` is the exact line minimum, so L-BFGS takes the iterations of
exact line searches (TFP's Hager–Zhang lands close to them too). The extra
trial is one more loop trip for that member only.

`refine_tolerance(n, m, exact)` chooses ``t``: with ``exact=True``
(`lbfgs_minimize(..., exact_line_search=True)`) every trial with sufficient
decrease is refined; with ``exact=False`` none is (MINPACK's search, as
SciPy's L-BFGS-B runs it); by default (None) from the problem's size:

* ``n <= m`` (no more variables than correction pairs): ``t =
  MODEL_TOLERANCE`` (1e-3), so only lines that are quadratic to within
  roundoff-like error are refined. The memory then spans the whole space,
  the quasi-Newton model is complete after ``n`` pairs and Wolfe steps give
  superlinear convergence; refining nonquadratic lines only costs
  evaluations (docs/design.md, "Measured variants of the refinement").
* ``n > m``: ``t = inf``, every trial with sufficient decrease is refined.
  The memory sees only an ``m``-dimensional slice of the curvature, and what
  the iterations keep of the rest comes from the conjugacy of near-exact
  steps (on a quadratic, L-BFGS with exact line searches makes the iterates
  of conjugate gradients, for any ``m``). On the PINN of
  `benchmarks/pinn_bench.py` the loss after k iterations is then at or
  below TFP's, where the quadratic-only rule lagged behind it, at fewer
  evaluations per iteration than TFP's (benchmarks/README.md, "A PINN").
  The cost is per evaluation: on Keras MLPs about two evaluations per
  iteration where SciPy's L-BFGS-B makes about one, and a loss per
  evaluation no better than SciPy's (benchmarks/README.md, "Keras: the
  on-device loop against SciPy"). So the default suits `max_iterations` as the
  budget (TFP's users); with wall time as the budget, ``exact=False`` is the
  better choice, and the interfaces (`LbfgsOptimizerInterface`,
  `tf_extopt.keras.fit`) make it their default (see
  `benchmarks/time_to_loss.py`). Rules in between were tried on the PINN
  and the MLPs (docs/design.md, "Measured variants of the refinement") and
  none kept both the per-iteration progress and one
  evaluation per iteration: refining only where the predicted gain of the
  extra trial, or the distance of the Wolfe point from the line minimum,
  is large; refining quadratic-looking lines at tighter model tolerances;
  tightening the curvature condition to 0.1 or 0.3 instead of refining.

Values at the limit of precision (a deviation from MINPACK). Near a
minimum the decrease a step can make falls below the rounding noise of the
objective's value: the sufficient-decrease test then compares noise with
noise, and whether it passes depends on how the machine rounds (XLA's CPU
code differs by instruction set), so the search may bisect until it gives
up although the step was good. The derivative stays accurate there, so, as
Hager and Zhang's approximate Wolfe conditions do, a trial whose value is
indistinguishable from ``phi(0)``::

    |fa - f0| <= noise_level(f0) = eps^(2/3) |f0|

is accepted on the derivative alone: ``|ga| <= gtol |g0|`` (which implies
their ``ga <= (2 ftol - 1) g0``, the form sufficient decrease takes on a
quadratic). Such a trial is never refined: its value says nothing about the
line's shape. Outside that band the search is MINPACK's.

The band, ``eps^(2/3)`` relative (4e-11 in float64, 2e-5 in float32), is
wider than the few ulps a simple objective rounds by: a loss summed over
many terms, or a Gaussian process's Cholesky factorisation, rounds by
hundreds to thousands of ulps, and a band narrower than the noise turns the
end of every long run into a failed search. Hager and Zhang use ``1e-6``
relative in double precision.

`noise_level` also decides, for the driver (see `_driver`), when a search
that found no acceptable point means the run is done: its fallback point
counts as progress only if it is lower than ``phi(0)`` by more than the
band; and when even the first trial's predicted change ``a0 |g0|`` is
within the band (`LineSearchState.resolvable` is false), the values could
not have told a decrease apart, and the member has converged to working
precision rather than failed.

Non-finite trials (NaN or +inf value or slope) are a deviation from MINPACK,
which has no notion of them: the trial becomes the upper end of a bracket and
the next step bisects towards the best point, so a search that steps into an
undefined region shrinks back out of it instead of failing.

References:
  J. J. Moré and D. J. Thuente. Line search algorithms with guaranteed
  sufficient decrease. ACM Transactions on Mathematical Software 20(3),
  286-307, 1994.
  W. W. Hager and H. Zhang. A new conjugate gradient method with guaranteed
  descent and an efficient line search. SIAM J. Optim. 16(1), 170-192, 2005
  (the approximate Wolfe conditions, section 4).
"""

import collections

import numpy as np
import tensorflow as tf

__all__ = ["LineSearchState", "init", "step", "pack", "unpack",
           "refine_tolerance", "noise_level", "CONTINUE", "CONVERGED",
           "WARNING"]

CONTINUE = 0
CONVERGED = 1
WARNING = 2

# MINPACK-2 / SciPy L-BFGS-B constants.
SUFFICIENT_DECREASE = 1e-3   # ftol: phi(a) <= phi(0) + ftol * a * phi'(0)
CURVATURE = 0.9              # gtol: |phi'(a)| <= gtol * |phi'(0)|
INTERVAL_TOLERANCE = 0.1     # xtol: relative width at which to give up
_EXTRAPOLATE_LOWER = 1.1     # xtrapl
_EXTRAPOLATE_UPPER = 4.0     # xtrapu
_SHRINK_FACTOR = 0.66        # force a bisection unless the interval shrinks

# Refinement (see the module docstring): for problems with no more variables
# than pairs, only where the cubic term of the line's Hermite fit is this small
# against the decrease.
MODEL_TOLERANCE = 1e-3

# Values within eps**NOISE_EXPONENT of |phi(0)| (relative) cannot be told
# apart from phi(0) (see "Values at the limit of precision").
NOISE_EXPONENT = 2.0 / 3.0

LineSearchState = collections.namedtuple(
    "LineSearchState",
    [
        "step",             # [B] the trial step to evaluate next.
        "initial_value",    # [B] phi(0).
        "initial_slope",    # [B] phi'(0) (< 0).
        "best_step",        # [B] stx.
        "best_value",       # [B] fx.
        "best_slope",       # [B] gx.
        "other_step",       # [B] sty.
        "other_value",      # [B] fy.
        "other_slope",      # [B] gy.
        "bracketed",        # [B] bool.
        "stage_one",        # [B] bool.
        "width",            # [B] width of the bracket before the last step.
        "width_before",     # [B] width two steps ago.
        "lower",            # [B] stmin.
        "upper",            # [B] stmax.
        "min_step",         # [B] stpmin.
        "max_step",         # [B] stpmax.
        "refine_tolerance", # [B] t of the refinement rule; < 0: never.
        "refining",         # [B] bool: the pending trial is that one.
        "resolvable",       # [B] bool: the first trial's predicted change
                            #     a0 |phi'(0)| exceeds `noise_level`.
        "num_evaluations",  # [B] int32 trials consumed so far.
    ])
LineSearchState.__doc__ = """State of one batched Moré–Thuente search.

Every field has the batch shape ``[B]``; see the module docstring for the map
from MINPACK names.
"""


def pack(state):
  """Stacks a `LineSearchState` into the `[K, B]` tensor the loop carries."""
  dtype = state.step.dtype
  return tf.stack([tf.cast(field, dtype) for field in state])


def unpack(packed):
  """Named view of a packed state (booleans and counters restored)."""
  fields = tf.unstack(packed, num=len(LineSearchState._fields))
  state = LineSearchState(*fields)
  return state._replace(
      bracketed=state.bracketed > 0.5, stage_one=state.stage_one > 0.5,
      refining=state.refining > 0.5, resolvable=state.resolvable > 0.5,
      num_evaluations=tf.cast(tf.round(state.num_evaluations), tf.int32))


def refine_tolerance(num_variables, num_pairs, exact=None):
  """The refinement rule's model tolerance `t` for `n` variables, `m` pairs.

  See "Refinement" in the module docstring: with `exact=None`,
  `MODEL_TOLERANCE` while `n <= m` and infinity (refine every trial with
  sufficient decrease) beyond; `exact=True` is infinity whatever the size
  (near-exact line searches everywhere).

  Args:
    num_variables: integer scalar `n` (a Python int or a `Tensor`).
    num_pairs: integer scalar `m`.
    exact: None or True (False means no refinement: pass no tolerance to
      `init` at all).

  Returns:
    A float64 scalar `Tensor`.
  """
  inf = tf.constant(float("inf"), tf.float64)
  if exact:
    return inf
  return tf.where(tf.convert_to_tensor(num_variables) > num_pairs, inf,
                  tf.constant(MODEL_TOLERANCE, tf.float64))


def noise_level(value):
  """The rounding noise `eps^(2/3) |value|` of objective values.

  Two values closer than this to each other are treated as equal by the
  line search (approximate Wolfe) and by the driver (no progress).
  """
  eps = np.finfo(value.dtype.as_numpy_dtype).eps
  return eps ** NOISE_EXPONENT * tf.abs(value)


def init(initial_step, value, slope, max_step, min_step=None,
         refine_tolerance=None):
  """Starts a search at `phi(0) = value`, `phi'(0) = slope`.

  Args:
    initial_step: `[B]` first trial step (clipped into `[min_step, max_step]`).
    value: `[B]` objective at step zero.
    slope: `[B]` directional derivative at step zero; must be negative for the
      members that will be searched.
    max_step: `[B]` largest step allowed (e.g. the distance to a bound).
    min_step: optional `[B]` smallest step allowed; zero by default.
    refine_tolerance: optional scalar or `[B]` model tolerance `t` under
      which a point with sufficient decrease is followed by one trial at the
      line minimiser of the quadratic model (see the module docstring and
      `refine_tolerance()`); None never refines.

  Returns:
    The packed state whose `step` is the first trial to evaluate.
  """
  zero = tf.zeros_like(value)
  if min_step is None:
    min_step = zero
  first = tf.clip_by_value(initial_step, min_step, max_step)
  width = max_step - min_step
  return pack(LineSearchState(
      step=first,
      initial_value=value,
      initial_slope=slope,
      best_step=zero,
      best_value=value,
      best_slope=slope,
      other_step=zero,
      other_value=value,
      other_slope=slope,
      bracketed=zero,
      stage_one=tf.ones_like(value),
      width=width,
      width_before=2.0 * width,
      lower=zero,
      upper=first + _EXTRAPOLATE_UPPER * first,
      min_step=min_step,
      max_step=max_step,
      refine_tolerance=tf.broadcast_to(
          tf.cast(-1.0 if refine_tolerance is None else refine_tolerance,
                  value.dtype), tf.shape(value)),
      refining=zero,
      resolvable=-first * slope > noise_level(value),
      num_evaluations=zero))


def step(state, value, slope, is_finite, final=None):
  """Consumes the objective at `state.step` and proposes the next trial.

  Args:
    state: the packed state.
    value: `[B]` objective value at `state.step`.
    slope: `[B]` directional derivative at `state.step`.
    is_finite: `[B]` bool, whether the value and the whole gradient were
      finite. Non-finite trials shrink the step (see the module docstring).
    final: optional `[B]` bool, true where the trial already meets the
      caller's stopping test; such a point is never refined.

  Returns:
    `(new_state, status, moved)`: the state with the next trial in `step`;
    `status` per member (`CONTINUE`, `CONVERGED` or `WARNING`); `moved`, true
    where the evaluated trial became the new best point. For members whose
    status is not `CONTINUE` the returned state is the input state with only
    `num_evaluations` advanced, so `best_step` still names the best point.
  """
  dtype = value.dtype
  state = unpack(state)
  stp = state.step
  # Keep the arithmetic clean for non-finite members; their result is replaced.
  f = tf.where(is_finite, value, state.best_value)
  g = tf.where(is_finite, slope, state.best_slope)
  gtest = SUFFICIENT_DECREASE * state.initial_slope
  ftest = state.initial_value + stp * gtest
  bracketed = state.bracketed
  # The value is indistinguishable from phi(0) (see "Values at the limit of
  # precision").
  flat = tf.abs(f - state.initial_value) <= noise_level(state.initial_value)

  # Tests on the trial just evaluated (dcsrch, before choosing a new step),
  # plus the approximate Wolfe conditions within the noise band.
  curvature = tf.abs(g) <= CURVATURE * (-state.initial_slope)
  converged = is_finite & ((f <= ftest) | flat) & curvature
  warning = (
      (bracketed & ((stp <= state.lower) | (stp >= state.upper)))
      | (bracketed & (state.upper - state.lower
                      <= INTERVAL_TOLERANCE * state.upper))
      | (is_finite & (stp >= state.max_step) & (f <= ftest) & (g <= gtest))
      | ((stp <= state.min_step) & (~is_finite | (f > ftest) | (g >= gtest))))
  # The extra trial of a refinement ends the search: taken when it is no
  # higher than the refined point, else the search falls back on that point.
  refining = state.refining
  refined_ok = is_finite & (f <= state.best_value)
  # Any point with sufficient decrease may be refined, Wolfe or not: on the
  # first iteration the trial is a guess that is often too short.
  armijo = is_finite & (f <= ftest) & ~flat
  refine, line_minimum = _refinement(
      state, stp, f, g, armijo if final is None else armijo & ~final)
  status = tf.where(
      refining, tf.where(refined_ok, CONVERGED, WARNING),
      tf.where(refine, CONTINUE,
               tf.where(converged, CONVERGED,
                        tf.where(warning, WARNING, CONTINUE))))

  # Stage one uses the auxiliary function psi(a) = phi(a) - phi(0) - a*gtest
  # until a step with psi <= 0 and phi' >= 0 is seen.
  stage_one = state.stage_one & ~((f <= ftest) & (g >= 0))
  use_psi = stage_one & (f <= state.best_value) & (f > ftest)
  shift = tf.where(use_psi, gtest, tf.zeros_like(gtest))
  (stx, fx, gx, sty, fy, gy, new_bracketed, new_step) = _dcstep(
      state.best_step, state.best_value - state.best_step * shift,
      state.best_slope - shift,
      state.other_step, state.other_value - state.other_step * shift,
      state.other_slope - shift,
      stp, f - stp * shift, g - shift,
      bracketed, state.lower, state.upper)
  fx = fx + stx * shift
  fy = fy + sty * shift
  gx = gx + shift
  gy = gy + shift
  moved = is_finite & tf.equal(stx, stp)

  # A non-finite trial is the new upper end of a bracket around the best point.
  inf = tf.constant(float("inf"), dtype)
  stx = tf.where(is_finite, stx, state.best_step)
  fx = tf.where(is_finite, fx, state.best_value)
  gx = tf.where(is_finite, gx, state.best_slope)
  sty = tf.where(is_finite, sty, stp)
  fy = tf.where(is_finite, fy, inf)
  gy = tf.where(is_finite, gy, inf)
  new_bracketed = new_bracketed | ~is_finite
  new_step = tf.where(is_finite, new_step, stx + 0.5 * (sty - stx))

  # Force a bisection when the bracket does not shrink fast enough.
  spread = tf.abs(sty - stx)
  new_step = tf.where(
      new_bracketed & (spread >= _SHRINK_FACTOR * state.width_before),
      stx + 0.5 * (sty - stx), new_step)
  width_before = tf.where(new_bracketed, state.width, state.width_before)
  width = tf.where(new_bracketed, spread, state.width)

  lower = tf.where(new_bracketed, tf.minimum(stx, sty),
                   new_step + _EXTRAPOLATE_LOWER * (new_step - stx))
  upper = tf.where(new_bracketed, tf.maximum(stx, sty),
                   new_step + _EXTRAPOLATE_UPPER * (new_step - stx))
  new_step = tf.clip_by_value(new_step, state.min_step, state.max_step)
  stuck = new_bracketed & ((new_step <= lower) | (new_step >= upper)
                           | (upper - lower <= INTERVAL_TOLERANCE * upper))
  new_step = tf.where(stuck, stx, new_step)

  searching = tf.equal(status, CONTINUE)
  counted = state.num_evaluations + 1
  advanced = LineSearchState(
      step=new_step,
      initial_value=state.initial_value,
      initial_slope=state.initial_slope,
      best_step=stx, best_value=fx, best_slope=gx,
      other_step=sty, other_value=fy, other_slope=gy,
      bracketed=new_bracketed,
      stage_one=stage_one,
      width=width,
      width_before=width_before,
      lower=lower, upper=upper,
      min_step=state.min_step,
      max_step=state.max_step,
      refine_tolerance=state.refine_tolerance,
      refining=tf.zeros_like(refine),
      resolvable=state.resolvable,
      num_evaluations=counted)
  # A refining member keeps the refined point as its best point and tries the
  # line minimiser next.
  refined = state._replace(
      step=tf.clip_by_value(line_minimum, state.min_step, state.max_step),
      best_step=stp, best_value=f, best_slope=g,
      refining=tf.ones_like(refine),
      num_evaluations=counted)
  # Members that stopped keep their state, so that `best_step` still names
  # their best point; every member's evaluation count advances. Selected
  # field by field and stacked last: under XLA a caller's `unpack` of the
  # result is then the field itself, where selecting over the packed
  # `[K, B]` state made every row the caller reads a call into one large
  # per-element function, inlined nowhere and vectorised nowhere
  # (benchmarks/README.md, "The per-trip update under XLA").
  new_state = pack(LineSearchState(*[
      tf.where(refine, if_refined, tf.where(searching, if_advanced, if_stopped))
      for if_refined, if_advanced, if_stopped in zip(
          refined, advanced, state._replace(num_evaluations=counted))]))
  return new_state, status, (moved & searching) | refine


def _refinement(state, stp, f, g, candidate):
  """Whether a trial with sufficient decrease buys one more trial, and where.

  See "Refinement" in the module docstring for the rule and its formulas.

  Returns:
    `(refine, line_minimum)`, both `[B]`.
  """
  f0, g0 = state.initial_value, state.initial_slope
  decrease = f0 - f
  # Trapezoidal rule: exact for a quadratic along the line.
  model_error = tf.abs(decrease + 0.5 * stp * (g0 + g))
  # t = inf refines any decrease (inf * decrease is inf for decrease > 0).
  trusted = model_error <= state.refine_tolerance * decrease
  line_minimum = stp * tf.math.divide_no_nan(g0, g0 - g)
  refine = ((state.refine_tolerance >= 0) & ~state.refining & candidate
            & trusted
            & tf.not_equal(g, 0) & (line_minimum > 0)
            & tf.math.is_finite(line_minimum))
  return refine, line_minimum


def _dcstep(stx, fx, dx, sty, fy, dy, stp, fp, dp, bracketed, stpmin, stpmax):
  """One safeguarded step of Moré–Thuente (MINPACK-2 ``dcstep``), batched.

  The four cases of the paper are computed for every member and selected with
  `tf.where`; a non-finite interpolant (degenerate cubic, or an end point
  whose value is +inf after a non-finite trial) falls back to bisection.

  Returns:
    `(stx, fx, dx, sty, fy, dy, bracketed, new_step)`.
  """
  zero = tf.zeros_like(stp)
  sgnd = dp * tf.sign(dx)

  def cubic_terms(f_a, f_b, d_a, d_b, a, b):
    theta = 3.0 * (f_a - f_b) / (b - a) + d_a + d_b
    s = tf.maximum(tf.maximum(tf.abs(theta), tf.abs(d_a)), tf.abs(d_b))
    s = tf.where(s > 0, s, tf.ones_like(s))
    return theta, s

  # Cases 1-3 interpolate between stx and stp with the same cubic; only the
  # sign of gamma differs.
  theta, s = cubic_terms(fx, fp, dx, dp, stx, stp)
  gamma = s * tf.sqrt(tf.maximum(zero, (theta / s) ** 2 - (dx / s) * (dp / s)))

  # Case 1: higher function value. The minimum is bracketed.
  gamma1 = tf.where(stp < stx, -gamma, gamma)
  p = (gamma1 - dx) + theta
  q = ((gamma1 - dx) + gamma1) + dp
  stpc = stx + (p / q) * (stp - stx)
  stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
  step1 = tf.where(tf.abs(stpc - stx) < tf.abs(stpq - stx), stpc,
                   stpc + (stpq - stpc) / 2.0)

  # Case 2: lower value, derivatives of opposite sign. Bracketed.
  gamma = tf.where(stp > stx, -gamma, gamma)
  p = (gamma - dp) + theta
  q = ((gamma - dp) + gamma) + dx
  stpc = stp + (p / q) * (stx - stp)
  # The secant step, shared with case 3.
  stpq = stp + (dp / (dp - dx)) * (stx - stp)
  step2 = tf.where(tf.abs(stpc - stp) > tf.abs(stpq - stp), stpc, stpq)

  # Case 3: lower value, same-sign derivative, derivative decreases.
  q = (gamma + (dx - dp)) + gamma
  r = p / q
  stpc = tf.where((r < 0) & tf.not_equal(gamma, 0), stp + r * (stx - stp),
                  tf.where(stp > stx, stpmax, stpmin))
  nearest = tf.where(tf.abs(stpc - stp) < tf.abs(stpq - stp), stpc, stpq)
  nearest = tf.where(stp > stx,
                     tf.minimum(stp + _SHRINK_FACTOR * (sty - stp), nearest),
                     tf.maximum(stp + _SHRINK_FACTOR * (sty - stp), nearest))
  farthest = tf.where(tf.abs(stpc - stp) > tf.abs(stpq - stp), stpc, stpq)
  farthest = tf.clip_by_value(farthest, stpmin, stpmax)
  step3 = tf.where(bracketed, nearest, farthest)

  # Case 4: lower value, same-sign derivative, derivative does not decrease.
  theta, s = cubic_terms(fp, fy, dp, dy, stp, sty)
  gamma = s * tf.sqrt(tf.maximum(zero, (theta / s) ** 2 - (dy / s) * (dp / s)))
  gamma = tf.where(stp > sty, -gamma, gamma)
  p = (gamma - dp) + theta
  q = ((gamma - dp) + gamma) + dy
  stpc = stp + (p / q) * (sty - stp)
  stpc = tf.where(tf.math.is_finite(stpc), stpc, 0.5 * (stp + sty))
  step4 = tf.where(bracketed, stpc, tf.where(stp > stx, stpmax, stpmin))

  case1 = fp > fx
  case2 = ~case1 & (sgnd < 0)
  case3 = ~case1 & ~case2 & (tf.abs(dp) < tf.abs(dx))
  new_step = tf.where(case1, step1,
                      tf.where(case2, step2, tf.where(case3, step3, step4)))
  fallback = tf.where(bracketed | case1 | case2, 0.5 * (stx + stp), stpmax)
  new_step = tf.where(tf.math.is_finite(new_step), new_step, fallback)
  new_bracketed = bracketed | case1 | case2

  # Update the interval that contains a minimizer.
  to_other = case1
  swap = ~case1 & (sgnd < 0)
  new_sty = tf.where(to_other, stp, tf.where(swap, stx, sty))
  new_fy = tf.where(to_other, fp, tf.where(swap, fx, fy))
  new_dy = tf.where(to_other, dp, tf.where(swap, dx, dy))
  new_stx = tf.where(to_other, stx, stp)
  new_fx = tf.where(to_other, fx, fp)
  new_dx = tf.where(to_other, dx, dp)
  return (new_stx, new_fx, new_dx, new_sty, new_fy, new_dy, new_bracketed,
          new_step)
