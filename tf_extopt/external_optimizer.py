"""Driving external (Python-side) optimizers over TensorFlow variables.

`ExternalOptimizerInterface` is the TF2 successor of
`tf.contrib.opt.ExternalOptimizerInterface`; `ScipyOptimizerInterface` wraps
`scipy.optimize.minimize`. The same classes serve two worlds:

* **Graph mode** (`tf.compat.v1` with eager execution disabled, or inside
  `tf.Graph().as_default()`): `loss` is a scalar Tensor, evaluation goes
  through a `tf.compat.v1.Session`, honouring `feed_dict`, `fetches` and
  `**run_kwargs`. All ops are built at construction; `minimize` adds none.
* **TF2 eager**: `loss` is a zero-argument callable, `var_list` is required
  (variables of any flavour, Keras models/layers, `tf.Module`s). Loss and
  gradient are compiled once into a `tf.function` over the packed float64
  point and never retrace.

Deliberate deviations from contrib:

* `minimize` returns SciPy's `OptimizeResult` (contrib returned None).
* If evaluation raises (including `KeyboardInterrupt`), returns NaN/Inf, or
  a callback raises `StopIteration`, the variables are set to the best
  finite point seen before returning or re-raising (contrib left them at
  whatever was last evaluated).
* When the optimizer ends on a non-finite point or loss (or, without
  constraints, on a worse point than one it evaluated), the best finite
  point seen is assigned and the result says so: `success=False`,
  `status=98`, with `fun` and `jac` of the assigned point.
* A loss that no variable in `var_list` reaches (every gradient None)
  raises `ValueError` (contrib minimized it and reported success).
* Graph mode assigns each evaluated point to the variables instead of
  feeding variable values (feeding does not work for resource variables).
* `var_to_bounds` keys that are not optimized variables raise `ValueError`
  (contrib ignored them); keys may also be `variable.ref()`, and the bounds
  may be given as a list of `(variable, (low, high))` pairs, because TF2
  variables are not hashable.
* Variables listed twice (or shared by two layers) are optimized once.
* `ScipyOptimizerInterface` passes the options SciPy has renamed since
  contrib under their new names, with a `FutureWarning` (TNC's `maxiter` is
  `maxfun`; Nelder-Mead's `xtol`/`ftol` are `xatol`/`fatol`), and refuses a
  keyword `scipy.optimize.minimize` does not take at construction
  (`ValueError`) rather than at `minimize` (contrib: `TypeError`).
* Variables' own constraints (`tf.Variable(constraint=...)`, Keras'
  `kernel_constraint=`) are not applied, as in contrib, but a `UserWarning`
  names them, unless `var_to_bounds` already enforces them.
* `minimize` (and the constructor) refuse to run inside the scope of a
  `tf.distribute` strategy that did not create the variables: Keras would
  divide the loss by that strategy's number of replicas.
"""

import inspect
import warnings

import numpy as np
from scipy.optimize import OptimizeResult

from tf_extopt._interface import _base
from tf_extopt._interface import _run

__all__ = ["ExternalOptimizerInterface", "ScipyOptimizerInterface"]


class ExternalOptimizerInterface(_base.VariableOptimizer):
  """Base class for interfaces with external optimization algorithms.

  Subclass this and implement `_minimize` to wrap a new algorithm;
  `_minimize` is called with keyword arguments (only those it declares,
  unless it takes `**kwargs`):

  * `initial_val`: float64 vector, the packed starting point.
  * `loss_grad_func(x) -> (loss, grad)`: loss and packed float64 gradient.
  * `equality_funcs`, `equality_grad_funcs`, `inequality_funcs`,
    `inequality_grad_funcs`: lists of `f(x) -> float` and
    `g(x) -> float64 vector`, one per constraint.
  * `packed_bounds`: None, or a list with one `(low, high)` pair per packed
    element (+/-inf where unbounded), as contrib passed it.
  * `step_callback(x, fun=None)`: call once per iteration with the
    iterate; pass `fun`, the loss there, when the algorithm knows it (the
    interface then need not look it up for `progress_callback`).
  * `optimizer_kwargs`: a copy of the extra constructor kwargs.
  * `loss_func(x) -> loss` (an addition to contrib's arguments): the loss
    alone, skipping the gradient, for gradient-free algorithms.

  It returns the packed optimum (as contrib subclasses do) or an
  `OptimizeResult`-like mapping with at least `x`.

  The constructor and `minimize` are the interfaces' common base's
  (`_base.VariableOptimizer`, shared with `LbfgsOptimizerInterface`, which
  has no `_minimize`): `minimize` is one template (`_run.run`), and
  `_minimize` is this class's way to fill it. A subclass that does not fit
  `_minimize`'s Python-callback shape overrides `_optimize(state)` instead.
  For that,
  `self._packer` (a `VariablePacker`) and `self._evaluator` are available,
  in either mode: `self._evaluator.value_and_gradient_tf(x)` is the
  TF-level packed `x -> (loss, packed_grad)`, and
  `self._evaluator.compile(fn, input_signature, name)` turns a TF-level
  function using it into `call(run, *args)` (see `_evaluators`).

  Attributes:
    optimizer_kwargs: The subclass-specific keyword arguments given at
      construction; never changed by `minimize`.
  """

  def _optimize(self, state):
    """Runs `_minimize` for `minimize`'s template (see `VariableOptimizer`)."""
    run = state.run
    loss_grad_func, loss_func, loss_at = self._make_loss_funcs(state)

    def step(xk, *unused_args, fun=None):
      state.iteration(xk, loss_at if fun is None else fun)

    eq_funcs, eq_grads = self._constraint_funcs(
        run, "eq", self._problem.num_equalities)
    ineq_funcs, ineq_grads = self._constraint_funcs(
        run, "ineq", self._problem.num_inequalities)
    packed_bounds = None
    if self._packed_bounds_arrays is not None:
      lower, upper = self._packed_bounds_arrays
      packed_bounds = list(zip(lower.tolist(), upper.tolist()))
    kwargs = dict(
        initial_val=state.best.x.copy(), loss_grad_func=loss_grad_func,
        equality_funcs=eq_funcs, equality_grad_funcs=eq_grads,
        inequality_funcs=ineq_funcs, inequality_grad_funcs=ineq_grads,
        packed_bounds=packed_bounds, step_callback=step,
        optimizer_kwargs=self._copy_optimizer_kwargs(), loss_func=loss_func)
    return _run.honest_result(self._call_minimize(kwargs), state,
                              self._packer.size, type(self).__name__)

  @staticmethod
  def _make_loss_funcs(state):
    """Builds `loss_grad_func(x)` and `loss_func(x)` for `_minimize`.

    Also returns `loss_at(x)`, the loss at an iterate for
    `progress_callback`: most algorithms report a point they have just
    evaluated, so the last evaluation is kept (only when there is a
    `progress_callback`); any other point is evaluated again.

    The no-callback versions do no per-variable work, only one compiled call
    and one comparison, because they run once per evaluation.
    """
    value_and_grad = state.run.value_and_grad
    value = state.run.value
    update = state.best.update_loss
    loss_callback = state.loss_callback
    last = {} if state.progress_callback is not None else None

    def loss_grad_func(x):
      state.nfev += 1
      out, fetched = value_and_grad(x)
      f, g = out[0], out[1:]
      update(f, x, g)
      if last is not None:
        last.update(x=np.array(x), f=float(f))
      if loss_callback is not None:
        _run.call_user(loss_callback, *fetched)
      return f, g

    def loss_func(x):
      state.nfev += 1
      f, fetched = value(x)
      f = float(f)
      update(f, x)
      if last is not None:
        last.update(x=np.array(x), f=f)
      if loss_callback is not None:
        _run.call_user(loss_callback, *fetched)
      return f

    def loss_at(x):
      if np.array_equal(last.get("x"), x):
        return last["f"]
      return float(value(x)[0])

    return loss_grad_func, loss_func, loss_at

  @staticmethod
  def _constraint_funcs(run, kind, count):
    """Per-constraint `f(x)` and `g(x)`, sharing one evaluation per point."""
    cache = {"x": None, "values": None}

    def evaluate(x):
      x = np.asarray(x, dtype=np.float64)
      if cache["x"] is None or not np.array_equal(cache["x"], x):
        cache["values"] = run.constraints(kind, x)
        cache["x"] = np.array(x)
      return cache["values"]

    funcs = [lambda x, i=i: float(evaluate(x)[0][i]) for i in range(count)]
    grads = [lambda x, i=i: np.array(evaluate(x)[1][i]) for i in range(count)]
    return funcs, grads

  def _copy_optimizer_kwargs(self):
    """A copy deep enough that no optimizer can mutate the user's kwargs."""
    return {k: dict(v) if isinstance(v, dict) else v
            for k, v in self.optimizer_kwargs.items()}

  def _call_minimize(self, kwargs):
    """Calls `_minimize` with the keyword arguments it declares."""
    params = inspect.signature(self._minimize).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
      names = {p.name for p in params}
      kwargs = {k: v for k, v in kwargs.items() if k in names}
    return self._minimize(**kwargs)

  def _minimize(self, initial_val, loss_grad_func, equality_funcs,
                equality_grad_funcs, inequality_funcs, inequality_grad_funcs,
                packed_bounds, step_callback, optimizer_kwargs,
                loss_func=None):
    """Wrapper for a particular optimization algorithm implementation.

    It would be appropriate for a subclass implementation of this method to
    raise `NotImplementedError` if unsupported arguments are passed: e.g. if
    an algorithm does not support constraints but `len(equality_funcs) > 0`.

    Args:
      initial_val: A NumPy vector of initial values.
      loss_grad_func: A function accepting a NumPy packed variable vector and
        returning two outputs, a loss value and the gradient of that loss
        with respect to the packed variable vector.
      equality_funcs: A list of functions each of which specifies a scalar
        quantity that an optimizer should hold exactly zero.
      equality_grad_funcs: A list of gradients of equality_funcs.
      inequality_funcs: A list of functions each of which specifies a
        scalar quantity that an optimizer should hold >= 0.
      inequality_grad_funcs: A list of gradients of inequality_funcs.
      packed_bounds: A list of bounds for each index, or None.
      step_callback: A callback function to execute at each optimization
        step, supplied with the current value of the packed variable vector.
      optimizer_kwargs: Other key-value arguments available to the
        optimizer.
      loss_func: A function accepting a NumPy packed variable vector and
        returning only the loss (no gradient computed).

    Returns:
      The optimal variable vector as a NumPy vector, or an `OptimizeResult`.
    """
    del loss_func  # Unused by this abstract implementation.
    raise NotImplementedError(
        "To use ExternalOptimizerInterface, subclass from it and implement "
        "the _minimize() method.")


# `scipy.optimize.minimize`'s documented methods (SciPy 1.17), lower case as
# SciPy compares them; SciPy has no public list of them.
_SCIPY_METHODS = ("nelder-mead", "powell", "cg", "bfgs", "newton-cg",
                  "l-bfgs-b", "tnc", "cobyla", "cobyqa", "slsqp",
                  "trust-constr", "dogleg", "trust-ncg", "trust-exact",
                  "trust-krylov")
# Method capabilities, with SciPy's spelling (names match case-insensitively).
_BOUNDS_METHODS = ("Nelder-Mead", "Powell", "L-BFGS-B", "TNC", "SLSQP",
                   "trust-constr", "COBYLA", "COBYQA")
_CONSTRAINT_METHODS = ("COBYLA", "COBYQA", "SLSQP", "trust-constr")
# Methods that never call the gradient: they get a loss-only function, which
# skips the gradient computation and SciPy's "does not use gradient" warning.
_GRADIENT_FREE_METHODS = ("nelder-mead", "powell", "cobyla", "cobyqa")
_SET_AUTOMATICALLY = ("jac", "callback", "constraints", "args", "x0", "fun")
# What else `scipy.optimize.minimize` takes (`bounds` comes from
# var_to_bounds).
_SCIPY_KEYWORDS = ("method", "options", "tol", "hess", "hessp")
# Method options SciPy has renamed since contrib's time (SciPy 1.0-1.4),
# whose meaning is unchanged: {method: {old name: new name}}. SciPy now only
# warns "Unknown solver options" for the old names and runs with its
# defaults, so a migrated program would silently optimise differently.
_RENAMED_OPTIONS = {
    # `maxiter` was TNC's limit on function evaluations; SciPy 1.9
    # deprecated it for `maxfun`, 1.11 removed it.
    "tnc": {"maxiter": "maxfun"},
    # Nelder-Mead's `xtol` and `ftol` were absolute tolerances already;
    # SciPy 0.18 renamed them `xatol` and `fatol`, and translated the old
    # names (with a DeprecationWarning) until it removed them.
    "nelder-mead": {"xtol": "xatol", "ftol": "fatol"},
}


def _modern_options(method, options, warn):
  """`options` with the names SciPy renamed since contrib replaced.

  Args:
    method: The SciPy method (a name, or a callable: left alone).
    options: The user's options dict, or None. Never modified.
    warn: Whether to warn (a `FutureWarning`, shown by default) about each
      old name, with the new one.

  Returns:
    `options` itself when nothing is renamed, else a new dict. When both
    names are given, the new one wins, as SciPy decided while it still
    translated them.
  """
  renamed = (_RENAMED_OPTIONS.get(method.lower())
             if isinstance(method, str) else None)
  if not renamed or not options:
    return options
  old_names = [old for old in renamed if old in options]
  if not old_names:
    return options
  options = dict(options)
  for old in old_names:
    new = renamed[old]
    value = options.pop(old)
    if new in options:
      what = "both are given, so %r=%r is ignored" % (old, value)
    else:
      options[new] = value
      what = "it is passed to SciPy as %r" % new
    if warn:
      warnings.warn(
          "SciPy has renamed the %s option %r to %r (same meaning); %s. "
          "Rename it in options to silence this warning." % (
              method, old, new, what), FutureWarning, stacklevel=3)
  return options


class ScipyOptimizerInterface(ExternalOptimizerInterface):
  """Wrapper allowing `scipy.optimize.minimize` to operate a TF optimizer.

  Example (TF2 / Keras):

  ```python
  opt = ScipyOptimizerInterface(lambda: loss_fn(model(x), y), model,
                                method="L-BFGS-B", options={"maxiter": 100})
  result = opt.minimize()   # model's variables now hold the optimum
  ```

  Example (TF1 graph, as with `tf.contrib.opt`):

  ```python
  vector = tf.compat.v1.Variable([7., 7.], name="vector")
  loss = tf.reduce_sum(tf.square(vector))
  optimizer = ScipyOptimizerInterface(loss, options={"maxiter": 100})
  with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    optimizer.minimize(session)
  ```

  `method` (default 'L-BFGS-B'), `options`, `tol`, `hess` and `hessp`
  (the other `scipy.optimize.minimize` keywords) are given as
  `**optimizer_kwargs`; `jac`, `callback`, `constraints` and `bounds` are
  set from the interface's own arguments. `hess`/`hessp`, if given, take
  the packed point.

  Options SciPy has renamed since contrib's time, with the same meaning,
  are passed under their new names, with a `FutureWarning` naming both, so
  that a program migrated from contrib optimises as it did: TNC's `maxiter`
  (its limit on function evaluations) is `maxfun`, Nelder-Mead's `xtol` and
  `ftol` are `xatol` and `fatol`. Your `options` dict is not modified.
  """

  _DEFAULT_METHOD = "L-BFGS-B"

  def __init__(self, loss, var_list=None, equalities=None, inequalities=None,
               var_to_bounds=None, *, jit_compile=False,
               distribute_strategy=None, **optimizer_kwargs):
    """See `ExternalOptimizerInterface.__init__`.

    Raises:
      TypeError: If `method` is neither a string nor a callable, or
        `options` is not a dict.
      ValueError: If `optimizer_kwargs` holds `bounds` (use `var_to_bounds`)
        or another argument the interface sets itself, or a keyword
        `scipy.optimize.minimize` does not take (unless a subclass has its
        own `_minimize`), `method` is unknown, or the method cannot take
        the given bounds or constraints.
    """
    super().__init__(loss, var_list, equalities, inequalities, var_to_bounds,
                     jit_compile=jit_compile,
                     distribute_strategy=distribute_strategy,
                     **optimizer_kwargs)

  def _check_options(self, optimizer_kwargs):
    self._check_scipy_kwargs(optimizer_kwargs)
    if type(self)._minimize is ScipyOptimizerInterface._minimize:  # pylint: disable=comparison-with-callable
      # They all go to scipy.optimize.minimize, which would reject an
      # unknown one only at the first minimize(), with a TypeError. A
      # subclass's own _minimize may take others.
      unknown = sorted(set(optimizer_kwargs) - set(_SCIPY_KEYWORDS))
      if unknown:
        raise ValueError(
            "ScipyOptimizerInterface got unknown option(s) %s; expected "
            "scipy.optimize.minimize keywords (%s), with the method's own "
            "options in options={...}." % (", ".join(unknown),
                                           ", ".join(_SCIPY_KEYWORDS)))
    # Warn once, here; every minimize translates again, silently.
    _modern_options(self._method(optimizer_kwargs),
                    optimizer_kwargs.get("options"), warn=True)

  def _configure(self):
    self._check_method_support(self._method(self.optimizer_kwargs),
                               self._packed_bounds_arrays is not None,
                               self._has_constraints)

  @classmethod
  def _method(cls, optimizer_kwargs):
    """The method `optimizer_kwargs` name, or the default."""
    return optimizer_kwargs.get("method", cls._DEFAULT_METHOD)

  @staticmethod
  def _check_scipy_kwargs(kwargs):
    if "bounds" in kwargs:
      raise ValueError(
          "Bounds must be set using the var_to_bounds argument, not "
          "bounds=..., so that they follow the variables' packing.")
    for name in _SET_AUTOMATICALLY:
      if name in kwargs:
        raise ValueError(
            "Optimizer keyword arg '%s' is set automatically and cannot be "
            "injected manually (use step_callback/loss_callback, "
            "equalities/inequalities)." % name)
    method = ScipyOptimizerInterface._method(kwargs)
    if not callable(method):
      if not isinstance(method, str):
        raise TypeError("method must be a SciPy method name or a callable; "
                        "got %s." % type(method).__name__)
      if method.lower() not in _SCIPY_METHODS:
        raise ValueError("method %r is not a scipy.optimize.minimize method; "
                         "expected one of %s." % (method,
                                                  ", ".join(_SCIPY_METHODS)))
    options = kwargs.get("options")
    if options is not None and not isinstance(options, dict):
      raise TypeError("options must be a dict; got %s." %
                      type(options).__name__)

  @staticmethod
  def _check_method_support(method, has_bounds, has_constraints):
    if callable(method):
      return  # A custom method takes whatever it is given.
    name = method.lower()
    if has_bounds and name not in [m.lower() for m in _BOUNDS_METHODS]:
      raise ValueError(
          "method %r cannot take bounds (var_to_bounds); methods that can: "
          "%s." % (method, ", ".join(_BOUNDS_METHODS)))
    if has_constraints and name not in [m.lower()
                                        for m in _CONSTRAINT_METHODS]:
      raise ValueError(
          "method %r cannot take equality/inequality constraints; methods "
          "that can: %s." % (method, ", ".join(_CONSTRAINT_METHODS)))

  def _minimize(self, initial_val, loss_grad_func, equality_funcs,
                equality_grad_funcs, inequality_funcs, inequality_grad_funcs,
                packed_bounds, step_callback, optimizer_kwargs,
                loss_func=None):
    """Runs `scipy.optimize.minimize`; see the base class for arguments."""
    import scipy.optimize  # pylint: disable=g-import-not-at-top

    optimizer_kwargs = dict(optimizer_kwargs)
    self._check_scipy_kwargs(optimizer_kwargs)
    method = optimizer_kwargs.pop("method", self._DEFAULT_METHOD)
    self._check_method_support(method, packed_bounds is not None,
                               bool(equality_funcs or inequality_funcs))

    constraints = []
    for func, grad_func in zip(equality_funcs, equality_grad_funcs):
      constraints.append({"type": "eq", "fun": func, "jac": grad_func})
    for func, grad_func in zip(inequality_funcs, inequality_grad_funcs):
      constraints.append({"type": "ineq", "fun": func, "jac": grad_func})

    bounds = None
    if packed_bounds is not None:
      lower, upper = (np.array(b, dtype=np.float64)
                      for b in zip(*packed_bounds))
      bounds = scipy.optimize.Bounds(lower, upper)

    if "options" in optimizer_kwargs:
      optimizer_kwargs["options"] = _modern_options(
          method, optimizer_kwargs["options"], warn=False)
    gradient_free = (isinstance(method, str)
                     and method.lower() in _GRADIENT_FREE_METHODS
                     and loss_func is not None)
    if gradient_free:
      fun, jac = loss_func, None
    else:
      fun, jac = loss_grad_func, True
    return scipy.optimize.minimize(
        fun, initial_val, jac=jac, method=method, bounds=bounds,
        constraints=constraints or (),
        callback=self._scipy_callback(method, step_callback),
        **optimizer_kwargs)

  @staticmethod
  def _scipy_callback(method, step_callback):
    """A SciPy callback handing `step_callback` the iterate and its loss.

    SciPy passes `callback(intermediate_result)`, which carries `fun`, to
    every method but TNC, which passes only the point; a custom method
    may call it with the point as well.
    """
    if isinstance(method, str) and method.lower() == "tnc":
      return step_callback

    def callback(intermediate_result):
      if isinstance(intermediate_result, OptimizeResult):
        step_callback(intermediate_result.x,
                      fun=intermediate_result.get("fun"))
      else:
        step_callback(intermediate_result)
    return callback
