"""`EagerEvaluator`: evaluations of a TF2 loss callable, compiled once.

The evaluator protocol is described in `_evaluators`; with a `tf.distribute`
strategy, each evaluation runs on every replica through `_distribute`.
"""

import numpy as np
import tensorflow as tf

from tf_extopt._interface import _distribute
from tf_extopt._interface import _evaluators
from tf_extopt._interface import _packing


def _fetch_value(fetch):
  """Evaluates one eager fetch (callable or variable) inside a tf.function."""
  if callable(fetch) and _packing.unwrap_variable(fetch) is None:
    return fetch()
  var = _packing.unwrap_variable(fetch)
  if var is not None:
    return var.read_value()
  return fetch


class EagerEvaluator:
  """Evaluates a zero-argument loss callable in TF2, compiled once.

  One `tf.function` per purpose (loss and gradient, loss only, each
  constraint kind, one per distinct `fetches` list) is traced once, with
  `input_signature=[TensorSpec([n], float64)]`, and cached on the evaluator,
  so repeated evaluations and repeated `minimize` calls never retrace.

  Hook for on-device optimizers (`LbfgsOptimizerInterface` uses it):
  `value_and_gradient_tf(x, observe=None)` is the TF-level
  `x -> (loss, packed_grad)`, usable inside another `tf.function`.
  """

  # `compile` traces on the first call, so compiling what may go unused
  # costs nothing.
  compiles_on_first_call = True

  def __init__(self, loss_fn, packer, equalities, inequalities,
               jit_compile=False, strategy=None, replica_inputs=()):
    """Records what to compile; nothing is traced until first use.

    Args:
      loss_fn: Callable returning the scalar loss: with no arguments, or
        with a `strategy`, one replica's contribution, called with that
        replica's share of `replica_inputs`.
      packer: A `_packing.VariablePacker` for the optimized variables.
      equalities: List of zero-argument callables to be held at zero.
      inequalities: List of zero-argument callables to be held nonnegative.
      jit_compile: Passed to every `tf.function` (XLA compilation).
      strategy: None, or the `tf.distribute.Strategy` whose replicas each
        evaluate the loss (see `_distribute`); constraints and fetches are
        evaluated once, in cross-replica context.
      replica_inputs: With a `strategy`, what it distributed for `loss_fn`
        (see `_distribute.Replicas`); `()` for a zero-argument loss.
    """
    self.packer = packer
    self._loss_fn = loss_fn
    self._replicas = (None if strategy is None else _distribute.Replicas(
        strategy, loss_fn, replica_inputs))
    self._constraint_fns = {"eq": list(equalities), "ineq": list(inequalities)}
    self._jit_compile = jit_compile
    self._spec = tf.TensorSpec([packer.size], tf.float64, name="x")
    self._cache = {}

  # --- TF-level functions (callable inside other tf.functions) -------------

  def _loss_and_gradients(self, loss_fn):
    """The float64 loss `loss_fn()` and its gradients, at the variables.

    Raises `ValueError` (at trace time) if no variable reaches the loss.
    """
    variables = self.packer.variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      for v in variables:
        tape.watch(v)
      loss = _evaluators.as_scalar_loss(loss_fn())
    grads = tape.gradient(loss, variables)
    _evaluators.check_depends(grads)
    return loss, grads

  def _evaluate(self, x, with_gradient):
    """Assigns packed `x`; returns the loss and (if asked) packed gradient.

    With a strategy, every replica evaluates its contribution and one
    all-reduce sums `[loss, gradient]`. Without the gradient, it is still
    traced (to check that the loss depends on the variables), but nothing
    uses it, so the compiled function never computes it.
    """
    packer = self.packer
    packer.assign(x)
    if self._replicas is None:
      loss, grads = self._loss_and_gradients(self._loss_fn)
      return loss, packer.pack_tensors(grads) if with_gradient else None

    def replica_fn(loss_fn):
      loss, grads = self._loss_and_gradients(loss_fn)
      loss = tf.reshape(loss, [1])
      if with_gradient:
        return tf.concat([loss, packer.pack_tensors(grads)], axis=0)
      return loss

    total = self._replicas.sum(replica_fn,
                               1 + packer.size if with_gradient else 1)
    return total[0], total[1:] if with_gradient else None

  def value_and_gradient_tf(self, x, observe=None):
    """Assigns packed `x` and returns float64 `(loss, packed_gradient)`.

    `observe(x, loss)`, if given, runs with the evaluation for its side
    effects (inside a `tf.function`, automatic control dependencies keep
    it).
    """
    loss, grad = self._evaluate(x, with_gradient=True)
    if observe is not None:
      observe(x, loss)
    return loss, grad

  def value_tf(self, x):
    """Assigns packed `x` and returns the float64 loss."""
    return self._evaluate(x, with_gradient=False)[0]

  def constraints_tf(self, kind, x):
    """Assigns packed `x`; returns constraint values `[m]` and Jacobian."""
    packer = self.packer
    packer.assign(x)
    values, rows = [], []
    for i, fn in enumerate(self._constraint_fns[kind]):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        for v in packer.variables:
          tape.watch(v)
        c = fn()
      values.append(
          _evaluators.as_scalar_loss(c, "%s constraint %d" % (kind, i)))
      rows.append(packer.pack_tensors(tape.gradient(c, packer.variables)))
    return tf.stack(values), tf.stack(rows)

  # --- Compiled, cached entry points ----------------------------------------

  def _compiled(self, key, python_fn, keepalive=None):
    """Returns the concrete function for `key`, tracing it on first use.

    `keepalive` (the fetch objects whose ids are in `key`) is stored with the
    entry so those ids cannot be reused by other objects meanwhile; it is not
    part of the key because TF2 variables are unhashable.
    """
    entry = self._cache.get(key)
    fn = entry[0] if entry is not None else None
    if fn is None:
      # Calling the concrete function directly skips tf.function's argument
      # matching, a measurable share of the per-evaluation cost on small
      # problems.
      fn = tf.function(python_fn, input_signature=[self._spec],
                       jit_compile=self._jit_compile,
                       autograph=False).get_concrete_function()
      self._cache[key] = (fn, keepalive)
    return fn

  def value_and_grad_fn(self, fetches=()):
    """Compiled `x -> concat([loss], grad)` (and fetch values if any)."""
    fetches = tuple(fetches)

    def fn(x):
      loss, grad = self.value_and_gradient_tf(x)
      out = tf.concat([tf.reshape(loss, [1]), grad], axis=0)
      if fetches:
        return out, [_fetch_value(f) for f in fetches]
      return out

    return self._compiled(("vg",) + tuple(map(id, fetches)), fn, fetches)

  def value_fn(self, fetches=()):
    """Compiled `x -> loss` (and fetch values if any)."""
    fetches = tuple(fetches)

    def fn(x):
      loss = self.value_tf(x)
      if fetches:
        return loss, [_fetch_value(f) for f in fetches]
      return loss

    return self._compiled(("v",) + tuple(map(id, fetches)), fn, fetches)

  def constraints_fn(self, kind):
    return self._compiled(("c", kind), lambda x: self.constraints_tf(kind, x))

  def scope(self):
    """The context in which to create state for compiled functions."""
    return tf.init_scope()

  def compile(self, fn, input_signature, name, jit_compile=None):
    """`fn` as a function of a bound run and NumPy-compatible arguments.

    Args:
      fn: A TF-level function of `input_signature`'s structure (it may call
        `value_and_gradient_tf`).
      input_signature: A list of (nests of) `tf.TensorSpec`s.
      name: Name scope of the ops (graph mode).
      jit_compile: None for the evaluator's own setting, else a bool.

    Returns:
      `call(run, *args)`: runs `fn` on `args` through `run` (a bound
      evaluator) and returns its outputs as NumPy values. Eagerly, `fn` is
      traced on the first call, once: one concrete function.
    """
    del name  # Function names are scoped by tf.function.
    return _EagerCompiled(fn, input_signature, self._jit_compile
                          if jit_compile is None else jit_compile)

  def assign_fn(self):
    def fn(x):
      self.packer.assign(x)
      return tf.constant(0, tf.int32)
    return self._compiled(("assign",), fn)

  def bind(self, session, feed_dict, fetches, run_kwargs):
    """Checks per-call arguments; returns the bound evaluator of one run."""
    if session is not None:
      raise ValueError(
          "session is only used in graph mode; this optimizer was built in "
          "eager mode (loss is a callable), so pass session=None.")
    if feed_dict is not None:
      raise ValueError(
          "feed_dict is only used in graph mode, where placeholders exist; "
          "in eager mode read inputs inside the loss callable instead.")
    if run_kwargs:
      raise ValueError(
          "Session.run keyword arguments %s are only used in graph mode." %
          sorted(run_kwargs))
    if not tf.executing_eagerly():
      raise ValueError(
          "minimize() runs the external optimizer in Python and cannot be "
          "called inside tf.function or a graph; call it eagerly.")
    fetches = _evaluators.fetch_list(fetches)
    for f in fetches:
      if not (callable(f) or _packing.unwrap_variable(f) is not None
              or isinstance(f, tf.Tensor)):
        raise TypeError(
            "In eager mode, fetches must be zero-argument callables or "
            "variables; got %s." % type(f).__name__)
    return _EagerRun(self, fetches)


class _EagerCompiled:
  """`EagerEvaluator.compile`'s result: one concrete function, traced once.

  Calling the concrete function directly skips tf.function's argument
  matching, and the fixed signature means it never retraces.
  """

  def __init__(self, fn, input_signature, jit_compile):
    self._function = tf.function(fn, input_signature=input_signature,
                                 jit_compile=jit_compile, autograph=False)
    self._concrete = None

  @property
  def concrete_function(self):
    if self._concrete is None:
      self._concrete = self._function.get_concrete_function()
    return self._concrete

  def __call__(self, unused_run, *args):
    return tf.nest.map_structure(lambda t: t.numpy(),
                                 self.concrete_function(*args))


class _EagerRun:
  """An `EagerEvaluator` bound to one list of fetches.

  The compiled functions are looked up once per `minimize` call, not once per
  evaluation, to keep Python work out of the hot path.
  """

  def __init__(self, evaluator, fetches):
    self._e = evaluator
    self.fetches = fetches
    self._vg = None
    self._v = None

  def value_and_grad(self, x):
    if self._vg is None:
      self._vg = self._e.value_and_grad_fn(self.fetches)
    return self._call(self._vg, x)

  def value(self, x):
    if self._v is None:
      self._v = self._e.value_fn(self.fetches)
    return self._call(self._v, x)

  def _call(self, function, x):
    """`(result, fetched values)` as NumPy from one compiled function."""
    outputs = function(tf.constant(x, tf.float64))
    if self.fetches:
      result, fetched = outputs
      return result.numpy(), [f.numpy() for f in fetched]
    return outputs.numpy(), []

  def constraints(self, kind, x):
    values, jac = self._e.constraints_fn(kind)(tf.constant(x, tf.float64))
    return values.numpy(), jac.numpy()

  def fetch(self, x):
    """Assigns `x`; returns the `fetches` evaluated there."""
    if not self.fetches:
      return []
    return self.value(x)[1]

  def read(self):
    return self._e.packer.pack_values().numpy()

  def assign(self, x):
    self._e.assign_fn()(tf.constant(np.asarray(x, dtype=np.float64)))
