"""The one `minimize` template every optimizer interface shares.

An interface's `minimize` binds its evaluator to the call's session,
`feed_dict` and `fetches`, then hands `run` (below) the algorithm-specific
part, `optimize(state)`. The template owns what is the same for every
algorithm:

* checking the user's callbacks, and turning `StopIteration` raised in any
  of them into an early stop (status 99) at the best point seen;
* the best point: what the variables get if the run is cut short, or if the
  optimizer ends on a non-finite or worse point (status 98,
  `honest_result`);
* assign-on-exit: the variables get the result's point on return, and the
  best point seen when anything (including `KeyboardInterrupt`) propagates;
* per-iteration progress (`x, fun, nit, nfev`) through `progress_callback`;
* the `OptimizeResult` of a stopped run, and the closing log line.
"""

import math

import numpy as np
from scipy.optimize import OptimizeResult
import tensorflow as tf

# `OptimizeResult.status` values of a run that ends with L-BFGS's own
# outcome (as SciPy's L-BFGS-B numbers them; set by lbfgs_interface).
STATUS_CONVERGED = 0
STATUS_MAX_ITERATIONS = 1
STATUS_FAILED = 2

# `OptimizeResult.status` values the interfaces set themselves, beside the
# optimizer's own codes.
STATUS_RESTORED = 97  # A Keras callback set the weights after the run.
STATUS_BEST_POINT = 98  # The optimizer's end point was replaced by a better one.
STATUS_STOPPED = 99  # A callback raised StopIteration.

_STOPPED_MESSAGE = "A callback (step, loss or progress) raised StopIteration."


class EarlyStop(Exception):
  """Raised through the optimizer when a callback asks to stop.

  A private type (not `StopIteration`) so that no optimizer can swallow it
  or, inside a generator, turn it into a `RuntimeError`.
  """


def call_user(callback, *args):
  """Calls a user callback; its `StopIteration` becomes `EarlyStop`."""
  try:
    callback(*args)
  except StopIteration:
    raise EarlyStop() from None


class BestPoint:
  """Tracks the point the variables should hold if the run is cut short.

  Without constraints that is the evaluated point with the lowest finite
  loss. With constraints the lowest loss is often infeasible, so it is the
  last iterate the optimizer reported through its step callback.
  """

  def __init__(self, x0, by_loss):
    self.x = np.array(x0, dtype=np.float64)
    self.f = math.inf
    self.g = None  # The gradient at `x`, when it was computed there.
    self.by_loss = by_loss

  def update_loss(self, f, x, g=None):
    # `f < self.f` is False for NaN, so NaN never becomes best.
    if self.by_loss and f < self.f and f > -math.inf:
      if np.isfinite(x).all():
        self.set(x, f, g)

  def update_iterate(self, x):
    if not self.by_loss and np.isfinite(x).all():
      self.x = np.array(x, dtype=np.float64)
      self.f = math.nan
      self.g = None

  def set(self, x, f, g=None):
    """Records `x` as the best point, with loss `f` and gradient `g`."""
    self.f = float(f)
    self.x = np.array(x, dtype=np.float64)
    self.g = None if g is None else np.array(g, dtype=np.float64)

  def result(self, **fields):
    """An `OptimizeResult` for the best point: `x`, `fun` and, if known,
    the gradient `jac` there, plus `fields`."""
    result = OptimizeResult(x=self.x, fun=self.f, **fields)
    if self.g is not None:
      result["jac"] = self.g
    return result


class RunState:
  """What one `minimize` call has seen: counters, best point, callbacks.

  Attributes:
    run: The evaluator bound to this call (`_graph_evaluator._GraphRun` or
      `_eager_evaluator._EagerRun`).
    best: The `BestPoint`.
    nit, nfev: Iterations and loss evaluations so far.
    stop_fields: Extra fields for the result of a stopped run.
    recover: None, or set by the optimizer to `() -> x`: a better point
      than `best.x` to assign if the run fails (e.g. the best point a
      compiled loop evaluated, read back from the device).
    step_callback, loss_callback, progress_callback: The user's callbacks
      (None when not given).
  """

  def __init__(self, run, by_loss, step_callback, loss_callback,
               progress_callback):
    for name, cb in (("step_callback", step_callback),
                     ("loss_callback", loss_callback),
                     ("progress_callback", progress_callback)):
      if cb is not None and not callable(cb):
        raise TypeError("%s must be callable; got %s." %
                        (name, type(cb).__name__))
    self.run = run
    self.step_callback = step_callback
    self.loss_callback = loss_callback
    self.progress_callback = progress_callback
    self.best = BestPoint(run.read(), by_loss)
    self.nit = 0
    self.nfev = 0
    self.stop_fields = {}
    self.recover = None

  @property
  def has_callbacks(self):
    return any(cb is not None for cb in (self.step_callback,
                                         self.loss_callback,
                                         self.progress_callback))

  def iteration(self, x, fun, nit=None, nfev=None):
    """Reports one iteration (or chunk) ending at packed `x` to the user.

    Args:
      x: The iterate, float64.
      fun: Its loss, or a function `x -> loss`, called only when a
        `progress_callback` needs it.
      nit, nfev: The counters, if the optimizer keeps its own; by default
        one more iteration is counted.

    Raises:
      EarlyStop: A callback raised `StopIteration`.
    """
    self.nit = self.nit + 1 if nit is None else nit
    if nfev is not None:
      self.nfev = nfev
    self.best.update_iterate(x)
    if self.step_callback is not None:
      call_user(self.step_callback, x)
    if self.progress_callback is not None:
      call_user(self.progress_callback, OptimizeResult(
          x=np.array(x, dtype=np.float64),
          fun=float(fun(x) if callable(fun) else fun),
          nit=self.nit, nfev=self.nfev))

  def stopped_result(self):
    return self.best.result(success=False, status=STATUS_STOPPED,
                            message=_STOPPED_MESSAGE, nfev=self.nfev,
                            nit=self.nit, **self.stop_fields)


def run(state, optimize):
  """Runs `optimize(state)` and leaves the variables at an honest point.

  Args:
    state: The call's `RunState`.
    optimize: `state -> OptimizeResult`, the algorithm; it may raise
      `EarlyStop` (from `state.iteration` or `call_user`).

  Returns:
    The `OptimizeResult`, whose `x` the variables now hold.
  """
  try:
    try:
      result = optimize(state)
    except EarlyStop:
      result = state.stopped_result()
  except BaseException:
    # Never leave the variables at a failing (possibly NaN) point, even if
    # the optimizer returned something unusable.
    x = state.best.x
    if state.recover is not None:
      try:
        x = state.recover()
      except Exception:  # pylint: disable=broad-except
        pass  # The session itself failed; keep the best point tracked.
    state.run.assign(x)
    raise
  state.run.assign(result.x)
  _log(result)
  return result


def _log(result):
  lines = ["Optimization terminated with:", "  Message: %s",
           "  Objective function value: %f"]
  args = [result.get("message", ""), result.get("fun", math.nan)]
  for key, label in (("nit", "Number of iterations"),
                     ("nfev", "Number of functions evaluations")):
    if key in result:
      lines.append("  %s: %%d" % label)
      args.append(int(result[key]))
  tf.get_logger().info("\n".join(lines), *args)


def honest_result(raw, state, size, owner):
  """Turns what a `_minimize` hook returned into an honest `OptimizeResult`.

  When the optimizer ended on a non-finite point (or loss), or, without
  constraints, on a worse point than one it evaluated, the best finite
  point seen replaces its result: `success` is then False, `status` is
  `STATUS_BEST_POINT`, and `x`, `fun` and `jac` all belong to the assigned
  point (the optimizer's own status is kept as `optimizer_status`).

  Args:
    raw: What the hook returned: an `OptimizeResult` (or a dict with `x`),
      or only the point.
    state: The run's state (`best`, `nfev`, `nit`).
    size: The packed point's length.
    owner: The optimizer's class name, for messages.
  """
  best = state.best
  fun_known = True
  if hasattr(raw, "keys") and "x" in raw:
    result = raw if hasattr(raw, "__getattr__") else OptimizeResult(**raw)
  else:
    # A contrib-style subclass returns only the point; its loss is known
    # only if that point was the best one evaluated.
    x = np.asarray(raw, dtype=np.float64).reshape([-1])
    fun_known = np.array_equal(x, best.x)
    result = OptimizeResult(x=x, fun=best.f if fun_known else math.nan,
                            success=True, status=0,
                            message="%s._minimize returned a point." % owner,
                            nfev=state.nfev, nit=state.nit)
    if fun_known and best.g is not None:
      result["jac"] = best.g
  x = np.asarray(result.x, dtype=np.float64).reshape([-1])
  if x.shape != (size,):
    raise ValueError("%s._minimize returned a point of shape %s; expected "
                     "(%d,)." % (owner, x.shape, size))
  fun = result.get("fun", math.nan)
  try:
    fun = float(np.asarray(fun).reshape([]))
  except (TypeError, ValueError):
    fun = math.nan
  # -inf is a minimum (the solvers converge there), NaN and +inf are not.
  non_finite = not np.isfinite(x).all() or (
      fun_known and (math.isnan(fun) or fun == math.inf))
  worse = (best.by_loss and fun_known and best.f < math.inf
           and not fun <= best.f)
  if not (non_finite or worse):
    result["x"] = x
    result["fun"] = fun
    return result
  if non_finite:
    why = "the optimizer ended on a non-finite point or loss"
  else:
    why = "the optimizer ended on a worse point than one it evaluated"
  if best.by_loss and best.f == math.inf:
    kept = "no finite loss was seen, so the initial point is kept"
  else:
    kept = "the best finite point seen is assigned instead"
  # Only the counters still hold; every other field (jac, hess_inv, ...)
  # described the point that is not assigned.
  counters = {k: result[k] for k in ("nit", "nfev", "njev", "nhev")
              if k in result}
  best_fields = dict(
      success=False, status=STATUS_BEST_POINT,
      message="%s; %s. Optimizer's message: %s" % (
          why, kept, result.get("message", "")),
      optimizer_status=result.get("status"), **counters)
  if not best.by_loss:
    return OptimizeResult(x=best.x, fun=math.nan, **best_fields)
  return best.result(**best_fields)
