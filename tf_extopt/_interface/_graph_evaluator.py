"""`GraphEvaluator`: evaluations of a TF1 graph's loss through a session.

The evaluator protocol is described in `_evaluators`. The graph walk here
(`_graph_loss_function`) copies the variables-to-loss part of a graph so
that on-device optimizers can evaluate the loss at new points inside a loop.
"""

import collections
import contextlib

import numpy as np
import tensorflow as tf

from tf_extopt._interface import _evaluators


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
    _evaluators.check_depends([None])
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


# The ops a `GraphEvaluator` builds in the loss's graph, which its bound
# runs (`_GraphRun`) execute through the session.
SessionOps = collections.namedtuple("SessionOps", [
    "x",  # float64 placeholder [n]: the packed point `assign` writes.
    "assign",  # Assigns `x` to the variables.
    "read",  # The variables' values, packed (float64 [n]).
    "loss",  # The loss as a float64 scalar.
    "loss_and_grad",  # float64 [1 + n]: the loss, then the packed gradient.
    "constraints",  # kind ('eq'/'ineq') -> (values [m], jacobian [m, n]).
])


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

  # `compile` builds the ops at once (`minimize` adds none to the graph).
  compiles_on_first_call = False

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
      x = tf.compat.v1.placeholder(tf.float64, [packer.size], name="x")
      assign_op = packer.assign(x)
      read = packer.pack_values()
      loss64 = _evaluators.as_scalar_loss(loss)
      grads = tf.gradients(loss, variables)
      _evaluators.check_depends(grads)
      loss_and_grad = tf.concat(
          [tf.reshape(loss64, [1]), packer.pack_tensors(grads)], axis=0)
      constraints = {}
      for kind, tensors in (("eq", equalities), ("ineq", inequalities)):
        if not tensors:
          continue
        values, rows = [], []
        for i, t in enumerate(tensors):
          values.append(
              _evaluators.as_scalar_loss(t, "%s constraint %d" % (kind, i)))
          rows.append(packer.pack_tensors(tf.gradients(t, variables)))
        constraints[kind] = (tf.stack(values), tf.stack(rows))
    self.ops = SessionOps(x, assign_op, read, loss64, loss_and_grad,
                          constraints)

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
    return _GraphRun(self, session, feed_dict,
                     _evaluators.fetch_list(fetches), dict(run_kwargs))

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
    self._ops = evaluator.ops
    self.session = session
    # Our own copy: we add nothing to it, but a caller may keep mutating
    # theirs while a callback runs.
    self.feed_dict = dict(feed_dict) if feed_dict else None
    self.fetches = fetches
    self.run_kwargs = run_kwargs

  def _set(self, x):
    self.session.run(self._ops.assign, feed_dict={self._ops.x: x},
                      **self.run_kwargs)

  def value_and_grad(self, x):
    self._set(x)
    out, fetched = self.session.run(
        [self._ops.loss_and_grad, self.fetches], feed_dict=self.feed_dict,
        **self.run_kwargs)
    return out, fetched

  def value(self, x):
    self._set(x)
    f, fetched = self.session.run([self._ops.loss, self.fetches],
                                   feed_dict=self.feed_dict,
                                   **self.run_kwargs)
    return f, fetched

  def constraints(self, kind, x):
    self._set(x)
    return self.session.run(self._ops.constraints[kind],
                             feed_dict=self.feed_dict, **self.run_kwargs)

  def fetch(self, x):
    """Assigns `x`; returns the `fetches` evaluated there."""
    self._set(x)
    return self.session.run(self.fetches, feed_dict=self.feed_dict,
                            **self.run_kwargs)

  def read(self):
    return self.session.run(self._ops.read, feed_dict=self.feed_dict)

  def assign(self, x):
    self._set(np.asarray(x, dtype=np.float64))
