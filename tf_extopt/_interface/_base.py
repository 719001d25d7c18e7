"""The common base of the interfaces: one problem, one `minimize` template.

`VariableOptimizer` turns the constructor's arguments into a validated
`_problem.Problem` (variables, bounds, strategy, evaluator) and runs every
`minimize` through one template (`_run.run`: best-point bookkeeping,
callbacks, the honest result). A subclass supplies `_optimize(state)`:
`ExternalOptimizerInterface` with contrib's `_minimize` hook for
Python-side algorithms (SciPy), `LbfgsOptimizerInterface` with the
on-device solver. Subclasses check their options in `_check_options`
(before the problem is built) and set themselves up in `_configure`.
"""

from tf_extopt._interface import _distribute
from tf_extopt._interface import _problem
from tf_extopt._interface import _run

__all__ = ["VariableOptimizer"]


class VariableOptimizer:
  """An optimizer of TensorFlow variables: `minimize` over a `Problem`.

  Attributes:
    optimizer_kwargs: The subclass-specific keyword arguments given at
      construction; never changed by `minimize`.
  """

  def __init__(self, loss, var_list=None, equalities=None, inequalities=None,
               var_to_bounds=None, *, jit_compile=False,
               distribute_strategy=None, **optimizer_kwargs):
    """Initializes a new interface instance.

    Args:
      loss: Graph mode: a scalar Tensor to minimize. Eager mode: a
        zero-argument callable returning the scalar loss.
      var_list: Variables to optimize: `tf.Variable`s, Keras 3
        `keras.Variable`s, tf_keras variables, Keras models/layers or
        `tf.Module`s (their trainable variables), or a list mixing these.
        Graph mode defaults to the graph's trainable-variables collection;
        eager mode requires it.
      equalities: Optional list of constraints to be held at zero: scalar
        Tensors in graph mode, zero-argument callables in eager mode.
      inequalities: Optional list of constraints to be held nonnegative,
        same types as `equalities`.
      var_to_bounds: Optional dict `{variable: (low, high)}` (keys may be
        `variable.ref()`), or list of `(variable, (low, high))` pairs. Each
        of `low`, `high` is None, +/-inf, or anything `np.broadcast_to` fits
        to the variable's shape; None elements mean unbounded.
      jit_compile: Eager mode only: compile loss and gradient with XLA.
      distribute_strategy: Eager mode only: a `tf.distribute.Strategy`
        (Mirrored, MultiWorkerMirrored, TPU) whose replicas evaluate the
        loss. Default: the strategy whose scope created the variables, if
        any. Then `loss` is called once per replica, in replica context,
        and must return that replica's *contribution*: the contributions
        are summed (one all-reduce of loss and gradient per evaluation),
        as with `tf.nn.compute_average_loss(per_example,
        global_batch_size=N)`. Constraints and `fetches` are evaluated
        once, in cross-replica context.
      **optimizer_kwargs: Other subclass-specific keyword arguments.

    Raises:
      TypeError: If `loss` or a constraint is the wrong kind for the mode
        (a callable in eager mode, a scalar Tensor or a callable building
        one in graph mode), a constraint list is not a list, or `var_list`
        holds something that is not a variable, model, layer or module, or
        `distribute_strategy` is not a `tf.distribute.Strategy`.
      ValueError: If `var_list` is missing in eager mode or holds a
        variable that is not floating, a Tensor has the wrong shape or
        graph, `var_to_bounds` is malformed (see
        `VariablePacker.packed_bounds`), or the strategy cannot be used
        (see `_distribute.resolve_strategy`: a parameter-server strategy,
        variables not created under its scope, graph mode, `jit_compile`
        across several replicas), or it is created inside the scope of a
        strategy that did not create the variables (Keras would divide the
        loss by that strategy's number of replicas; see
        `_distribute.check_scope`).
    """
    self._check_options(optimizer_kwargs)
    self._attach(_problem.Problem(type(self).__name__, loss, var_list,
                                  equalities, inequalities, var_to_bounds,
                                  jit_compile, distribute_strategy),
                 optimizer_kwargs)

  @classmethod
  def _on_problem(cls, problem, **optimizer_kwargs):
    """An interface on a `_problem.Problem` its caller built.

    The private constructor path, for `tf_extopt.keras.fit`: it resolves
    the model's variables and strategy itself (it needs the strategy to
    build a per-replica loss) and hands them over in the problem, so
    nothing is resolved twice and the public `loss` argument takes only
    what its docstring says.
    """
    self = cls.__new__(cls)
    self._check_options(optimizer_kwargs)
    self._attach(problem, optimizer_kwargs)
    return self

  def _check_options(self, optimizer_kwargs):
    """Checks the subclass's options before the problem is built."""

  def _attach(self, problem, optimizer_kwargs):
    """Takes `problem`'s pieces, then lets the subclass `_configure`."""
    self.optimizer_kwargs = optimizer_kwargs
    self._problem = problem
    self._packer = problem.packer
    self._evaluator = problem.evaluator
    self._packed_bounds_arrays = problem.packed_bounds
    self._strategy = problem.strategy
    self._has_constraints = bool(problem.num_equalities
                                 or problem.num_inequalities)
    self._configure()

  def _configure(self):
    """Subclass set-up once the problem is known (options, compilation)."""

  @property
  def distribute_strategy(self):
    """The `tf.distribute.Strategy` evaluating the loss, or None."""
    return self._strategy

  @property
  def packed_bounds(self):
    """`(lower, upper)` float64 arrays (+/-inf when unbounded) or None."""
    return self._packed_bounds_arrays

  def minimize(self, session=None, feed_dict=None, fetches=None,
               step_callback=None, loss_callback=None,
               progress_callback=None, **run_kwargs):
    """Minimizes the loss and assigns the optimum to the variables.

    Args:
      session: Graph mode: the `tf.compat.v1.Session` to run (defaults to
        the default session). Must be None in eager mode.
      feed_dict: Graph mode: feed dict for every `session.run` (not
        modified). Must be None in eager mode.
      fetches: Values passed to `loss_callback`. Graph mode: anything
        `session.run` accepts. Eager mode: zero-argument callables or
        variables, evaluated in the same compiled call as the loss.
      step_callback: Called once per iteration with the packed point (all
        optimized variables flattened into one float64 vector). Raise
        `StopIteration` to end the run; the best point seen is assigned.
      loss_callback: Called on every loss evaluation with the evaluated
        `fetches` as positional arguments.
      progress_callback: Called once per iteration, after `step_callback`,
        with an `OptimizeResult` holding `x` (the packed iterate), `fun`
        (the loss there), `nit` (iterations so far) and `nfev` (loss
        evaluations so far), like SciPy's `callback(intermediate_result)`.
        The loss comes from the optimizer or from the evaluation at that
        point; only when neither has it (SciPy's TNC, some custom
        algorithms) is it evaluated again, and that evaluation is not
        counted in `nfev`. Raise `StopIteration` to end the run.
      **run_kwargs: Graph mode: passed to every `session.run`.

    Returns:
      A `scipy.optimize.OptimizeResult`. `x` is the packed point assigned
      to the variables, and `fun` (and `jac`, when present) belong to it.
      When the run stopped early (`StopIteration`), `status` is 99 and
      `success` False. When the optimizer ended on a non-finite point or
      loss, or (without constraints) on a worse point than one it
      evaluated, the best finite point seen is assigned instead: `success`
      is False, `status` is 98, the message says why, and the optimizer's
      own status is in `optimizer_status`.

    Raises:
      TypeError: If a callback is not callable, `fetches` is not a list or
        holds the wrong kind of value, `session` is not a session or
        `feed_dict` not a dict.
      ValueError: If `session`/`feed_dict`/`run_kwargs` are given in eager
        mode, no session is available in graph mode, or it is called inside
        the scope of a strategy other than the variables' (Keras would
        divide the loss by its number of replicas).
      Exception: Any exception raised while evaluating the loss (including
        `KeyboardInterrupt`) propagates after the best finite point seen has
        been assigned to the variables.
    """
    # The loss is traced at the first evaluation, so a foreign scope around
    # `minimize` alone would scale it too.
    _distribute.check_scope(self._strategy,
                            "%s.minimize()" % type(self).__name__)
    run = self._evaluator.bind(session, feed_dict, fetches, run_kwargs)
    state = _run.RunState(run, not self._has_constraints, step_callback,
                          loss_callback, progress_callback)
    return _run.run(state, self._optimize)

  def _optimize(self, state):
    """Runs the algorithm for `minimize`'s template; returns the result.

    Args:
      state: The `_run.RunState` of this run: `state.run` evaluates (see
        `_evaluators.BoundRun`), `state.best.x` is the start point.

    Returns:
      An `OptimizeResult`, checked by `_run.honest_result`.
    """
    raise NotImplementedError
