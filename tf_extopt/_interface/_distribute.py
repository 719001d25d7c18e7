"""Evaluating a loss across the replicas of a `tf.distribute.Strategy`.

With a strategy, an evaluation of the loss and gradient at a packed point is:

1. assign the point to the (mirrored) variables, in cross-replica context:
   every local replica's copy gets the same value, and every worker holds
   the same point because every worker runs the same solver on the same
   reduced values;
2. `strategy.run` the loss and its packed gradient in every replica, each
   on its share of the data;
3. one `strategy.reduce(SUM, ...)` of the vector `[loss, gradient]`: one
   all-reduce per evaluation (per batch when the data is a distributed
   dataset of several batches).

So the loss a replica returns is its *contribution*: the per-replica losses
are summed, as in a custom training loop with `tf.nn.compute_average_loss`
(`global_batch_size` the whole data's size). The solvers stay on plain
tensors; they never see the strategy.

A loss may also take arguments: `tf_extopt.keras.fit` hands the evaluator a
per-replica loss together with the data the strategy distributed for it
(`_problem.Problem.on_replicas`).
"""

import warnings
import weakref

import tensorflow as tf

__all__ = ["Replicas", "any_worker", "check_scope",
           "is_chief", "resolve_strategy", "same_on_all_workers"]


_PARAMETER_SERVER = (
    tf.distribute.experimental.ParameterServerStrategy,
    tf.compat.v1.distribute.experimental.ParameterServerStrategy)


def _variable_strategy(variable):
  """The strategy whose scope created `variable`, or None."""
  if isinstance(variable, tf.distribute.DistributedValues):
    return getattr(variable, "distribute_strategy", None)
  return None


def resolve_strategy(variables, distribute_strategy, graph_mode,
                     jit_compile):
  """The strategy to evaluate with, or None for a plain evaluation.

  Args:
    variables: The optimized `tf.Variable`s (as `_packing` resolved them).
    distribute_strategy: The user's `distribute_strategy=` argument: None
      (the strategy whose scope created the variables, if any) or a
      `tf.distribute.Strategy`.
    graph_mode: Whether the interface runs a TF1 graph.
    jit_compile: The user's `jit_compile`.

  Returns:
    A `tf.distribute.Strategy` or None.

  Raises:
    TypeError: `distribute_strategy` is not a `tf.distribute.Strategy`.
    ValueError: A parameter-server strategy, variables from several
      strategies or from another strategy than the one given, a strategy
      whose scope did not create the variables, a strategy in graph mode,
      or `jit_compile=True` across several replicas.
  """
  if distribute_strategy is not None and not isinstance(
      distribute_strategy, (tf.distribute.Strategy,
                            tf.compat.v1.distribute.Strategy)):
    raise TypeError("distribute_strategy must be a tf.distribute.Strategy or "
                    "None; got %s." % type(distribute_strategy).__name__)
  found = []
  for v in variables:
    s = _variable_strategy(v)
    if s is not None and not any(s is f for f in found):
      found.append(s)
  if graph_mode and (distribute_strategy is not None or found):
    raise ValueError(
        "tf.distribute strategies are supported in eager mode (TF2) only; "
        "this interface was built on a TF1 graph (loss is a Tensor).")
  if len(found) > 1:
    raise ValueError(
        "var_list holds variables created under %d different "
        "tf.distribute strategies; create them all under one "
        "strategy.scope()." % len(found))
  strategy = distribute_strategy
  if strategy is None:
    strategy = found[0] if found else None
  elif found and found[0] is not strategy:
    raise ValueError(
        "distribute_strategy is not the strategy whose scope created the "
        "variables in var_list; pass that strategy, or None to use it.")
  elif not found and strategy.num_replicas_in_sync > 1:
    raise ValueError(
        "distribute_strategy=%s has %d replicas, but the variables in "
        "var_list were not created under its scope: build the model (or "
        "variables) inside `with strategy.scope():`." %
        (type(strategy).__name__, strategy.num_replicas_in_sync))
  if strategy is None:
    return None
  if isinstance(strategy, _PARAMETER_SERVER):
    raise ValueError(
        "%s is not supported: L-BFGS needs the exact full-batch gradient at "
        "every evaluation, which asynchronous parameter-server training "
        "does not give. Use MirroredStrategy (one machine) or "
        "MultiWorkerMirroredStrategy (several)." % type(strategy).__name__)
  if jit_compile and strategy.num_replicas_in_sync > 1:
    raise ValueError(
        "jit_compile=True cannot be combined with %s over %d replicas: XLA "
        "compiles for one device, and the evaluation spans several. Use "
        "jit_compile=False (TPUStrategy compiles each replica's part with "
        "XLA by itself)." % (type(strategy).__name__,
                              strategy.num_replicas_in_sync))
  return strategy


def _describe(strategy):
  return "%s (%d replica%s)" % (
      type(strategy).__name__, strategy.num_replicas_in_sync,
      "" if strategy.num_replicas_in_sync == 1 else "s")


def check_scope(strategy, caller):
  """Refuses to evaluate inside the scope of a strategy other than `strategy`.

  Keras divides a loss computed under a strategy's scope (its compiled loss,
  `model.compute_loss`, `model.losses` in `compute_loss`) by that
  strategy's `num_replicas_in_sync`, in cross-replica context too, so that
  replicas' losses sum to the mean. Under the scope of a strategy that did
  not create the variables, nothing sums the replicas, and the loss would be
  silently divided: with two replicas, half the true loss. Keras' own `fit`
  refuses (or fails) there too. A foreign scope of one replica divides by 1
  and is let through when the evaluation uses no strategy.

  Args:
    strategy: The strategy the evaluations run on (from `resolve_strategy`),
      or None.
    caller: What is being called, for the error message.

  Raises:
    ValueError: Called inside another strategy's scope, naming both.
  """
  if not tf.distribute.has_strategy():
    return
  ambient = tf.distribute.get_strategy()
  if ambient is strategy or (strategy is None
                             and ambient.num_replicas_in_sync == 1):
    return
  if strategy is None:
    owner = "outside any tf.distribute strategy's scope"
  else:
    owner = "under another strategy, %s" % _describe(strategy)
  raise ValueError(
      "%s was called inside the scope of %s, but the variables were created "
      "%s. Keras divides a loss computed under a strategy's scope by its "
      "number of replicas, so the loss would be silently scaled (and Keras' "
      "own fit refuses this too). Call it outside `with strategy.scope():`, "
      "or create (and compile) the model inside the scope of the strategy "
      "it is to be trained on." % (caller, _describe(ambient), owner))


class Replicas:
  """Runs per-replica evaluations of one loss and sums them.

  Attributes:
    strategy: The `tf.distribute.Strategy`.
  """

  def __init__(self, strategy, loss_fn, inputs=()):
    """Initializes the replicas' evaluation.

    Args:
      strategy: The `tf.distribute.Strategy`.
      loss_fn: `loss_fn(*inputs) -> scalar`, called in each replica with
        that replica's share of `inputs`; the returned contributions are
        summed. The user's per-replica loss takes no arguments.
      inputs: A tuple of distributed values (one batch the strategy split,
        passed to every evaluation), or a
        `tf.distribute.DistributedDataset` passed over once per evaluation
        (one all-reduce per batch).
    """
    self.strategy = strategy
    self._fn, self._inputs = loss_fn, inputs

  def sum(self, replica_fn, size):
    """The sum over replicas (and batches) of `replica_fn(loss)`.

    Args:
      replica_fn: `replica_fn(loss) -> [size] float64 vector`, run in each
        replica; `loss()` there computes that replica's loss on its share.
      size: The length of `replica_fn`'s output.

    Returns:
      The summed `[size]` float64 vector, the same on every worker.
    """
    strategy, fn = self.strategy, self._fn

    def on_replica(*inputs):
      return replica_fn(lambda: fn(*inputs))

    def all_reduce(inputs):
      return strategy.reduce(tf.distribute.ReduceOp.SUM,
                             strategy.run(on_replica, args=inputs),
                             axis=None)

    if isinstance(self._inputs, tuple):
      return all_reduce(self._inputs)
    with warnings.catch_warnings():
      # tf.data says, while this is traced, that a distributed dataset's
      # options are read in graph mode; nothing here depends on them.
      warnings.filterwarnings("ignore", message="To make it possible to "
                              "preserve tf.data options")
      return self._inputs.reduce(
          tf.zeros([size], tf.float64),
          lambda total, batch: total + all_reduce((batch,)))


def is_chief(strategy):
  """Whether this process writes logs and checkpoints (True without one)."""
  return strategy is None or bool(strategy.extended.should_checkpoint)


def any_worker(strategy, flag):
  """Whether `flag` is True on any worker of a multi-worker strategy.

  One all-reduce (compiled once per strategy), so that a decision taken on
  one worker (a callback stopping the run) is taken on all of them; the
  identity otherwise.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return bool(flag)
  return bool(_summed(strategy, tf.constant(1. if flag else 0., tf.float32))
              > 0)


def _summed(strategy, value):
  """`value` summed over the strategy's replicas, by a cached all-reduce."""
  total = _SUMS.get(strategy)
  if total is None:
    @tf.function(autograph=False)
    def total(value):
      values = strategy.run(lambda: tf.identity(value))
      return strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)
    _SUMS[strategy] = total
  return total(value)


_SUMS = weakref.WeakKeyDictionary()


def same_on_all_workers(strategy, value):
  """Whether the number `value` is the same on every worker.

  One all-reduce of `[1, value, value**2]` per replica: the values are all
  equal exactly when `count * sum(v**2) == sum(v)**2` (Cauchy-Schwarz),
  which every worker computes from the same sums, so all of them decide
  alike. Exact for integers below 2**26. True without several workers.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  value = float(value)
  count, first, second = _summed(
      strategy, tf.constant([1., value, value * value], tf.float64)).numpy()
  return count * second == first * first
