"""Evaluating loss, gradient and constraints at a packed point.

Two evaluators share one interface so the optimizer classes do not branch on
the execution mode:

* `GraphEvaluator` (TF1 graphs and `tf.compat.v1.Session`s): every op is
  built once, at construction; evaluating runs the session.
* `EagerEvaluator` (TF2): loss and gradient are compiled once into a
  `tf.function` with a fixed `input_signature`, so they never retrace.

Both take a packed float64 point, assign it to the variables and return
NumPy values. `bind(session, feed_dict, fetches, run_kwargs)` checks the
per-call arguments and returns the object that `minimize` evaluates through
(`_GraphRun` or `_EagerRun`), with these methods:

* `value_and_grad(x) -> (out, fetched)`: `out[0]` is the loss and `out[1:]`
  the packed gradient, one float64 array (one device-to-host copy);
* `value(x) -> (loss, fetched)` for gradient-free methods;
* `constraints(kind, x) -> (values [m], jacobian [m, n])`, kind 'eq'/'ineq';
* `fetch(x) -> fetched` (assigns `x`);
* `read() -> x`, `assign(x)`.

On-device optimizers build their solver through the evaluator too, so they
need not know the mode either: `value_and_gradient_tf(x)` is the TF-level
loss and packed gradient, `compile(fn, input_signature, name)` turns a
TF-level function into `call(run, *args) -> NumPy outputs` (ops fed by
placeholders and run by the session in graph mode; a concrete function
eagerly), and `scope()` is where to create the variables such functions
use.
"""

import contextlib

import numpy as np
import tensorflow as tf

from tf_extopt import _distribute
from tf_extopt import _packing


def _as_scalar_loss(loss, what="loss"):
  """Checks that `loss` is a real scalar and casts it to float64."""
  loss = tf.convert_to_tensor(loss)
  if not (loss.dtype.is_floating or loss.dtype.is_integer):
    raise TypeError("%s must be a real scalar; got dtype %s." %
                    (what, loss.dtype.name))
  if loss.shape.rank is not None and loss.shape.num_elements() != 1:
    raise ValueError("%s must be a scalar; got shape %s." % (what, loss.shape))
  return tf.reshape(tf.cast(loss, tf.float64), [])


def check_depends(gradients):
  """Raises when no variable reaches the loss (every gradient is None).

  Minimizing such a loss would "converge" at once at the start point, a
  success that means nothing; the usual cause is a loss that reads other
  variables (or a copy of the model) than `var_list`. Variables that do not
  reach the loss while others do are allowed: their gradient is zero.
  """
  if all(g is None for g in gradients):
    raise ValueError(
        "loss does not depend on any variable in var_list (every gradient is "
        "None): check that the loss reads the variables, model or layers "
        "passed as var_list, not copies of them.")


def _fetch_list(fetches):
  """Checks that `fetches` is None or a list/tuple; returns a new list."""
  if fetches is None:
    return []
  if not isinstance(fetches, (list, tuple)):
    raise TypeError("fetches must be a list of values to pass to "
                    "loss_callback; got %s." % type(fetches).__name__)
  return list(fetches)


def _variable_reads(graph, variables):
  """Maps tensor names through which a graph reads `variables` to indices."""
  reads = {}
  handles = {}
  for i, v in enumerate(variables):
    handle = getattr(v, "handle", None)
    if handle is not None and getattr(handle, "op", None) is not None and (
        handle.op.type in ("VarHandleOp", "Placeholder")):
      handles[handle.name] = i
    else:
      # A legacy reference variable: reads go through its `/read` snapshot
      # (what `convert_to_tensor(variable)` returns) or the ref itself.
      reads[v.value().name] = i
      reads[v.op.outputs[0].name] = i
  if handles:
    for op in graph.get_operations():
      if op.type == "ReadVariableOp" and op.inputs[0].name in handles:
        reads[op.outputs[0].name] = handles[op.inputs[0].name]
  return reads


def _dependent_ops(loss_op, reads):
  """The ops on a path from a variable read to `loss_op`.

  A depth-first walk with an explicit stack, so that a graph deeper than
  Python's recursion limit is walked as well.

  Returns:
    `(dependent, order)`: a dict from every visited op's name to whether it
    depends on a read in `reads`, and the dependent ops in topological order.
  """
  dependent = {}
  order = []
  stack = [(loss_op, False)]
  while stack:
    op, inputs_done = stack.pop()
    if inputs_done:
      dep = any(t.name in reads or dependent.get(t.op.name, False)
                for t in op.inputs)
      dependent[op.name] = dep
      if dep:
        order.append(op)
    elif op.name not in dependent:
      # Marked before its inputs are visited: a cycle (a v1 while loop)
      # then reads False instead of looping forever.
      dependent[op.name] = False
      stack.append((op, True))
      stack.extend((t.op, False) for t in op.inputs
                   if t.name not in reads and t.op.name not in dependent)
  return dependent, order


def _graph_loss_function(loss, variables):
  """A pure function `[values per variable] -> loss` copying `loss`'s graph.

  A graph-mode loss Tensor is computed once per `session.run`; a
  `tf.while_loop` cannot re-evaluate it at new points. So the part of the
  graph between the variables' reads and the loss is imported again (inside
  the loop body) with the reads replaced by the given values; every input
  that does not depend on the variables (placeholders, constants, data) is
  captured from the original graph unchanged, so `feed_dict` still applies.
  """
  graph = loss.graph
  reads = _variable_reads(graph, variables)
  dependent, order = _dependent_ops(loss.op, reads)
  if not dependent[loss.op.name]:
    check_depends([None])
  graph_def = tf.compat.v1.GraphDef()
  external = {}
  for op in order:
    node = graph_def.node.add()
    node.CopyFrom(op.node_def)
    # Control inputs would point at ops that are not copied; the data inputs
    # carry every dependency the loss value has.
    kept = [s for s in node.input if not s.startswith("^")]
    del node.input[:]
    node.input.extend(kept)
    for t in op.inputs:
      if t.name not in reads and not dependent.get(t.op.name, False):
        external[t.name] = t

  def function(values):
    input_map = {name: values[i] for name, i in reads.items()}
    for name, t in external.items():
      # Captures the outer tensor into the current (loop body) graph.
      input_map[name] = tf.identity(t)
    # Only map tensors that the copied ops actually consume.
    consumed = set()
    for op in order:
      consumed.update(t.name for t in op.inputs)
    input_map = {k: v for k, v in input_map.items() if k in consumed}
    (out,) = tf.compat.v1.import_graph_def(
        graph_def, input_map=input_map, return_elements=[loss.name],
        name="lbfgs_loss")
    return out

  return function


@contextlib.contextmanager
def _control_flow_v2():
  """Builds `tf.while_loop`/`tf.cond` as v2 ops, even under TF1 behaviour.

  After `tf.compat.v1.disable_v2_behavior()`, v1 control flow cannot feed the
  loss function's captured inputs (placeholders) into a loop frame. The
  previous setting is restored on exit, so the user's graph is otherwise
  built as they asked.
  """
  previous = tf.compat.v1.control_flow_v2_enabled()
  tf.compat.v1.enable_control_flow_v2()
  try:
    yield
  finally:
    if not previous:
      tf.compat.v1.disable_control_flow_v2()


class GraphEvaluator:
  """Evaluates a graph-mode loss through a `tf.compat.v1.Session`.

  Each evaluation is two `session.run` calls: one assigning the packed point
  to the variables, one computing loss, gradient and fetches. Contrib fed the
  variables' values through `feed_dict` instead, which only works for legacy
  reference variables; assigning works for resource variables too, at the
  price of the variables holding the last evaluated point while the
  optimizer runs (the final point is assigned at the end either way).

  For on-device optimizers, `compile` builds ops once, at once, fed from
  placeholders; `value_and_gradient_tf` re-evaluates the loss at a new
  point inside such ops by importing the variables-to-loss part of the graph
  again (see `_graph_loss_function`).
  """

  def __init__(self, loss, packer, equalities, inequalities):
    """Builds every op in `loss.graph`.

    Args:
      loss: A scalar `tf.Tensor` in a graph.
      packer: A `_packing.VariablePacker` for the optimized variables.
      equalities: List of scalar Tensors to be held at zero.
      inequalities: List of scalar Tensors to be held nonnegative.
    """
    self.packer = packer
    self.graph = loss.graph
    self._loss_tensor = loss
    self._loss_of_values = None
    variables = packer.variables
    with self.graph.as_default(), tf.name_scope("external_optimizer"):
      self._x = tf.compat.v1.placeholder(tf.float64, [packer.size], name="x")
      self._assign_op = packer.assign(self._x)
      self._read = packer.pack_values()
      loss64 = _as_scalar_loss(loss)
      grads = tf.gradients(loss, variables)
      check_depends(grads)
      self._loss = loss64
      self._loss_and_grad = tf.concat(
          [tf.reshape(loss64, [1]), packer.pack_tensors(grads)], axis=0)
      self._constraints = {}
      for kind, tensors in (("eq", equalities), ("ineq", inequalities)):
        if not tensors:
          continue
        values, rows = [], []
        for i, t in enumerate(tensors):
          values.append(_as_scalar_loss(t, "%s constraint %d" % (kind, i)))
          rows.append(packer.pack_tensors(tf.gradients(t, variables)))
        self._constraints[kind] = (tf.stack(values), tf.stack(rows))

  def bind(self, session, feed_dict, fetches, run_kwargs):
    """Checks per-call arguments; returns the bound evaluator of one run."""
    if session is None:
      session = tf.compat.v1.get_default_session()
      if session is None:
        raise ValueError(
            "minimize() in graph mode needs a session: pass session=... or "
            "call it inside `with session.as_default():`.")
    if not hasattr(session, "run"):
      raise TypeError("session must be a tf.compat.v1.Session; got %s." %
                      type(session).__name__)
    if getattr(session, "graph", self.graph) is not self.graph:
      raise ValueError("session runs a different graph than the one holding "
                       "the loss.")
    if feed_dict is not None and not hasattr(feed_dict, "items"):
      raise TypeError("feed_dict must be a dict; got %s." %
                      type(feed_dict).__name__)
    return _GraphRun(self, session, feed_dict, _fetch_list(fetches),
                     dict(run_kwargs))

  def value_and_gradient_tf(self, x, observe=None):
    """Float64 `(loss, packed_gradient)` at packed `x`, as TF ops.

    Only for functions given to `compile`: the loss Tensor is computed once
    per `session.run`, so it is imported again at `x` (the variables are not
    assigned). The graph walk happens on the first call.

    Args:
      x: Packed float64 point.
      observe: Optional TF-level `observe(x, loss)` run with the evaluation
        for its side effects (say, recording the best point); it runs even
        though no output depends on it.
    """
    packer = self.packer
    if self._loss_of_values is None:
      self._loss_of_values = _graph_loss_function(self._loss_tensor,
                                                  packer.variables)
    loss_of_values = self._loss_of_values

    # A function of its own: `tf.gradients` through the imported ops, traced
    # straight into a loop body, loses the loop state's static shapes; and a
    # v2 loop body built in a TF1 graph adds no automatic control
    # dependencies, which a function does, so `observe` is not pruned.
    @tf.function(autograph=False)
    def objective(x):
      values = packer.unpack(x)
      value = loss_of_values(values)
      grads = tf.gradients(value, values)
      loss = tf.cast(tf.reshape(value, []), tf.float64)
      if observe is not None:
        observe(x, loss)
      return loss, packer.pack_tensors(grads)
    return objective(x)

  def scope(self):
    """The context in which to create state for compiled functions."""
    return self.graph.as_default()

  def compile(self, fn, input_signature, name, jit_compile=None):
    """Builds `fn`'s ops now, on placeholders; see `EagerEvaluator.compile`.

    `tf.while_loop`/`tf.cond` are built as v2 control flow even under TF1
    behaviour (see `_control_flow_v2`).
    """
    del jit_compile  # The session runs the graph as built.
    with self.graph.as_default(), tf.name_scope(name), _control_flow_v2():
      inputs = tf.nest.map_structure(
          lambda spec: tf.compat.v1.placeholder(spec.dtype, spec.shape),
          input_signature)
      outputs = fn(*inputs)
    placeholders = tf.nest.flatten(inputs)

    def call(run, *args):
      feed = dict(run.feed_dict or {})
      feed.update(zip(placeholders, tf.nest.flatten(args)))
      return run.session.run(outputs, feed_dict=feed, **run.run_kwargs)
    return call


class _GraphRun:
  """A `GraphEvaluator` bound to one session, feed_dict and fetches.

  Attributes:
    session, feed_dict, fetches, run_kwargs: What every `session.run` of
      this call uses (`feed_dict` is a copy, or None).
  """

  def __init__(self, evaluator, session, feed_dict, fetches, run_kwargs):
    self._e = evaluator
    self.session = session
    # Our own copy: we add nothing to it, but a caller may keep mutating
    # theirs while a callback runs.
    self.feed_dict = dict(feed_dict) if feed_dict else None
    self.fetches = fetches
    self.run_kwargs = run_kwargs

  def _set(self, x):
    self.session.run(self._e._assign_op, feed_dict={self._e._x: x},
                      **self.run_kwargs)

  def value_and_grad(self, x):
    self._set(x)
    out, fetched = self.session.run(
        [self._e._loss_and_grad, self.fetches], feed_dict=self.feed_dict,
        **self.run_kwargs)
    return out, fetched

  def value(self, x):
    self._set(x)
    f, fetched = self.session.run([self._e._loss, self.fetches],
                                   feed_dict=self.feed_dict,
                                   **self.run_kwargs)
    return f, fetched

  def constraints(self, kind, x):
    self._set(x)
    return self.session.run(self._e._constraints[kind],
                             feed_dict=self.feed_dict, **self.run_kwargs)

  def fetch(self, x):
    """Assigns `x`; returns the `fetches` evaluated there."""
    self._set(x)
    return self.session.run(self.fetches, feed_dict=self.feed_dict,
                            **self.run_kwargs)

  def read(self):
    return self.session.run(self._e._read, feed_dict=self.feed_dict)

  def assign(self, x):
    self._set(np.asarray(x, dtype=np.float64))


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

  Hook for on-device optimizers (e.g. a later `LbfgsOptimizerInterface`):
  `value_and_gradient_tf(x)` is the TF-level `x -> (loss, packed_grad)`,
  usable inside another `tf.function`.
  """

  def __init__(self, loss_fn, packer, equalities, inequalities,
               jit_compile=False, strategy=None):
    """Records what to compile; nothing is traced until first use.

    Args:
      loss_fn: Zero-argument callable returning the scalar loss (with a
        `strategy`: one replica's contribution, or a
        `_distribute.ReplicaLoss`).
      packer: A `_packing.VariablePacker` for the optimized variables.
      equalities: List of zero-argument callables to be held at zero.
      inequalities: List of zero-argument callables to be held nonnegative.
      jit_compile: Passed to every `tf.function` (XLA compilation).
      strategy: None, or the `tf.distribute.Strategy` whose replicas each
        evaluate the loss (see `_distribute`); constraints and fetches are
        evaluated once, in cross-replica context.
    """
    self.packer = packer
    self._loss_fn = loss_fn
    self._replicas = (None if strategy is None
                      else _distribute.Replicas(strategy, loss_fn))
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
      loss = _as_scalar_loss(loss_fn())
    grads = tape.gradient(loss, variables)
    check_depends(grads)
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
      values.append(_as_scalar_loss(c, "%s constraint %d" % (kind, i)))
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
    fetches = _fetch_list(fetches)
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
