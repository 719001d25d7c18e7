"""From what the user passed to an interface to a problem it can evaluate.

`Problem` validates `loss`, `var_list`, the constraints and `var_to_bounds`,
and decides here, once, between the two worlds:

* **graph mode** when `loss` is a symbolic Tensor or eager execution is off
  (`tf.compat.v1` graphs and sessions): the loss and constraints are scalar
  Tensors (zero-argument callables are called once, to build them), and
  `var_list` defaults to the graph's trainable variables;
* **eager mode** otherwise: the loss and constraints are zero-argument
  callables, `var_list` is required.

The decision is the choice of evaluator (`_graph_evaluator.GraphEvaluator`
or `_eager_evaluator.EagerEvaluator`); nothing downstream asks which it was.
"""

import warnings

import numpy as np
import tensorflow as tf

from tf_extopt._interface import _distribute
from tf_extopt._interface import _eager_evaluator
from tf_extopt._interface import _graph_evaluator
from tf_extopt._interface import _packing


def _as_list(value, name):
  if value is None:
    return []
  if isinstance(value, (list, tuple)):
    return list(value)
  raise TypeError("%s must be a list of constraints; got %s." %
                  (name, type(value).__name__))


def _graph_tensor(value, name, graph=None):
  """Checks that `value` is a scalar Tensor (in `graph`, if given)."""
  if not tf.is_symbolic_tensor(value):
    raise TypeError("In graph mode %s must be a scalar Tensor; got %s."
                    % (name, type(value).__name__))
  if graph is not None and value.graph is not graph:
    raise ValueError("%s is in a different graph than loss." % name)
  if value.shape.rank is not None and value.shape.num_elements() != 1:
    raise ValueError("%s must be a scalar Tensor; got shape %s." %
                     (name, value.shape))
  return value


def _is_graph_mode(loss, owner):
  """Whether `loss` belongs to a TF1 graph; rejects the impossible cases."""
  if tf.inside_function():
    raise ValueError(
        "%s cannot be created inside tf.function: it drives a Python "
        "optimizer. Create it eagerly with a loss callable, or in a "
        "tf.Graph with a loss Tensor." % owner)
  if tf.is_tensor(loss) and not tf.is_symbolic_tensor(loss):
    raise TypeError(
        "In eager mode loss must be a zero-argument callable returning "
        "the loss; got an eager Tensor (a value already computed, which "
        "cannot be re-evaluated at new variable values).")
  return tf.is_symbolic_tensor(loss) or not tf.executing_eagerly()


class Problem:
  """A validated problem and the evaluator for it.

  Attributes:
    packer: The `_packing.VariablePacker` of the optimized variables.
    evaluator: A `GraphEvaluator` or `EagerEvaluator`.
    strategy: The `tf.distribute.Strategy` evaluations run on, or None.
    packed_bounds: `(lower, upper)` float64 arrays, or None.
    num_equalities, num_inequalities: Constraint counts.
    jit_compile: Whether evaluations are compiled with XLA.
  """

  def __init__(self, owner, loss, var_list, equalities, inequalities,
               var_to_bounds, jit_compile, distribute_strategy=None):
    """Validates the user's arguments and builds the evaluator.

    Args:
      owner: The interface's class name, for error messages.
      loss, var_list, equalities, inequalities, var_to_bounds, jit_compile,
        distribute_strategy: As `ExternalOptimizerInterface.__init__` takes
        them.

    Raises:
      ValueError: As `ExternalOptimizerInterface.__init__` documents.
    """
    equalities = _as_list(equalities, "equalities")
    inequalities = _as_list(inequalities, "inequalities")
    graph_mode = _is_graph_mode(loss, owner)
    if graph_mode:
      loss, var_list, equalities, inequalities = self._graph_arguments(
          loss, var_list, equalities, inequalities, jit_compile)
    else:
      self._check_eager_arguments(loss, var_list, equalities, inequalities)
    self.packer = _packing.VariablePacker(_packing.resolve_var_list(var_list))
    self.packed_bounds = self.packer.packed_bounds(var_to_bounds)
    self._warn_unapplied_constraints(owner, var_list)
    self.strategy = _distribute.resolve_strategy(
        self.packer.variables, distribute_strategy, graph_mode, jit_compile)
    # A graph-mode loss is built already: under a foreign scope, scaled.
    _distribute.check_scope(self.strategy, owner)
    self.num_equalities = len(equalities)
    self.num_inequalities = len(inequalities)
    self.jit_compile = jit_compile
    if graph_mode:
      self.evaluator = _graph_evaluator.GraphEvaluator(
          loss, self.packer, equalities, inequalities)
    else:
      self.evaluator = _eager_evaluator.EagerEvaluator(
          loss, self.packer, equalities, inequalities,
          jit_compile=jit_compile, strategy=self.strategy)

  @classmethod
  def on_replicas(cls, packer, strategy, contribution, replica_inputs,
                  var_to_bounds, jit_compile):
    """An eager problem whose caller resolved the variables and strategy.

    `tf_extopt.keras.fit`'s path: it needs the strategy before it can build
    the loss (each replica's contribution on its share of the data), so it
    resolves and checks both itself (`_packing.resolve_var_list`,
    `_distribute.resolve_strategy`, `_distribute.check_scope`), once.

    Args:
      packer: The `_packing.VariablePacker` of the resolved variables.
      strategy: The resolved `tf.distribute.Strategy`, or None.
      contribution: With a strategy, `contribution(*inputs)` returns one
        replica's share of the loss on its share of `replica_inputs`
        (see `_distribute.Replicas`); without one, the zero-argument loss.
      replica_inputs: What the strategy distributed for `contribution`
        (`()` without a strategy).
      var_to_bounds, jit_compile: As `ExternalOptimizerInterface.__init__`
        takes them.
    """
    self = cls.__new__(cls)
    self.packer = packer
    self.packed_bounds = packer.packed_bounds(var_to_bounds)
    self.strategy = strategy
    self.num_equalities = self.num_inequalities = 0
    self.jit_compile = jit_compile
    self.evaluator = _eager_evaluator.EagerEvaluator(
        contribution, packer, [], [], jit_compile=jit_compile,
        strategy=strategy, replica_inputs=replica_inputs)
    return self

  def describe_variables(self):
    """`(x, loss, gradient)` at the variables' current values (eager mode).

    One evaluation, counted in no `nfev`: for `tf_extopt.keras.fit`, when
    a callback has moved the variables after the run
    (`EarlyStopping(restore_best_weights=True)`).
    """
    run = self.evaluator.bind(None, None, None, {})
    x = run.read()
    out, _ = run.value_and_grad(x)
    return x, float(out[0]), np.asarray(out[1:], dtype=np.float64)

  def _warn_unapplied_constraints(self, owner, var_list):
    """Warns about the variables' own constraints, which are not applied.

    Contrib's interfaces ignored them, and so do these: a projection behind
    the optimizer's back would break its line searches and memory, and
    legacy programs keep their meaning. But silence lets the optimum
    violate a constraint unnoticed. A constraint that is a box which
    `var_to_bounds` already enforces is not warned about.
    """
    pairs = _packing.variable_constraints(var_list)
    if not pairs:
      return
    index = {id(v): i for i, v in enumerate(self.packer.variables)}
    if self.packed_bounds is not None:
      lowers, uppers = (self.packer.split(b) for b in self.packed_bounds)
    ignored = []
    for var, constraint in pairs:
      box = _packing.constraint_box(constraint, var.shape)
      if box is not None and self.packed_bounds is not None:
        i = index[id(var)]
        if (lowers[i] >= box[0]).all() and (uppers[i] <= box[1]).all():
          continue
      ignored.append("%r (%s)" % (var.name, type(constraint).__name__))
    if ignored:
      warnings.warn(
          "%s does not apply the variables' own constraints (as contrib's "
          "did not), so the result may violate them: %s. Give bounds with "
          "var_to_bounds (Keras' NonNeg is (0, None)) or constraints with "
          "equalities/inequalities, or fit a Keras model with "
          "tf_extopt.keras.fit, which turns constraints that are bounds "
          "into bounds." % (owner, ", ".join(ignored)), UserWarning,
          stacklevel=5)

  @staticmethod
  def _graph_arguments(loss, var_list, equalities, inequalities,
                       jit_compile):
    """Graph mode: builds and checks the Tensors, defaults `var_list`."""
    if jit_compile:
      raise ValueError("jit_compile applies to eager mode only; in graph "
                       "mode the session runs the graph as built.")
    if callable(loss) and not tf.is_tensor(loss):
      loss = loss()
    loss = _graph_tensor(loss, "loss")
    equalities = [_graph_tensor(c() if callable(c) else c,
                                "equalities[%d]" % i, loss.graph)
                  for i, c in enumerate(equalities)]
    inequalities = [_graph_tensor(c() if callable(c) else c,
                                  "inequalities[%d]" % i, loss.graph)
                    for i, c in enumerate(inequalities)]
    if var_list is None:
      var_list = loss.graph.get_collection(
          tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
      if not var_list:
        raise ValueError("var_list is None and the graph has no trainable "
                         "variables.")
    return loss, var_list, equalities, inequalities

  @staticmethod
  def _check_eager_arguments(loss, var_list, equalities, inequalities):
    if not callable(loss):
      raise TypeError(
          "In eager mode loss must be a zero-argument callable; got %s."
          % type(loss).__name__)
    if var_list is None:
      raise ValueError(
          "var_list is required in eager mode: pass the variables, or the "
          "Keras model/layer or tf.Module whose trainable variables to "
          "optimize.")
    for name, cons in (("equalities", equalities),
                       ("inequalities", inequalities)):
      for i, c in enumerate(cons):
        if not callable(c):
          raise TypeError(
              "In eager mode %s[%d] must be a zero-argument callable; got "
              "%s." % (name, i, type(c).__name__))
