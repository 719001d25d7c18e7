"""`LbfgsOptimizerInterface`: `lbfgs_minimize` over TF variables, on device.

Same constructor and `minimize` as `ScipyOptimizerInterface`, but the whole
optimization runs inside one compiled TensorFlow call (per chunk, see
`iterations_per_call`): no host round trip per evaluation, so it runs on GPU
and under `jit_compile=True`.

Deliberate differences from `ScipyOptimizerInterface`:

* `step_callback` and `loss_callback` run between compiled chunks of
  `iterations_per_call` iterations (default: 1 when a callback is given, all
  iterations in one call otherwise), not on every iteration/evaluation. The
  solve resumes through `previous_optimizer_results`, keeping the L-BFGS
  memory, so a chunked run follows the same path as one long run.
  `step_callback` gets the packed float64 point reached at the end of the
  chunk; `loss_callback` gets the `fetches` evaluated at that point.
* `equalities`/`inequalities` raise `ValueError` (use
  `ScipyOptimizerInterface`). `var_to_bounds` switches the solver to
  `lbfgsb_minimize` (L-BFGS-B), with the same options except
  `initial_inverse_hessian_estimate`.
* The result's `nit`/`nfev` come from `lbfgs_minimize`'s counters, and
  `lbfgs_results` holds the final `LBfgsOptimizerResults`.
* If a compiled chunk raises (say, an assertion in the loss), the variables
  get the best finite point the chunk evaluated, as
  `ScipyOptimizerInterface` does, not the chunk's start point.
* A run costs one compiled loss-and-gradient call at the start point, then
  one compiled solver call (eager) or one `session.run` (graph mode) per
  chunk, then one assignment of the result to the variables.

Graph mode (`tf.compat.v1` sessions, also under `disable_v2_behavior()`):
the loss Tensor cannot be re-evaluated inside a `tf.while_loop`, so the part
of the graph between the variables and the loss is imported again into the
loop body with the variables' reads replaced by the iterate; placeholders,
constants and other inputs that do not depend on the variables are captured
unchanged, so `feed_dict` applies as usual. The solver ops are built once,
at construction; `minimize` adds no ops.
"""

import contextlib
import inspect
import math

import numpy as np
from scipy.optimize import OptimizeResult
import tensorflow as tf

from tf_extopt import _evaluators
from tf_extopt import _run
from tf_extopt.external_optimizer import ExternalOptimizerInterface
from tf_extopt.lbfgs import lbfgs_minimize
from tf_extopt.lbfgsb import lbfgsb_minimize
from tf_extopt._results import LBfgsOptimizerResults

__all__ = ["LbfgsOptimizerInterface"]

_RESERVED = ("value_and_gradients_function", "initial_position",
             "previous_optimizer_results", "name")
_LBFGS_OPTIONS = tuple(
    p for p in inspect.signature(lbfgs_minimize).parameters
    if p not in _RESERVED)

_STATUS_CONVERGED = 0
_STATUS_MAX_ITERATIONS = 1
_STATUS_FAILED = 2


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


class _BestSeen:
  """The best finite point the compiled loop has evaluated, in variables.

  An exception inside a compiled chunk (a failing assertion or numerics
  check in the loss, an out-of-memory error) loses the loop's state, so the
  objective records its best point in two variables as it goes: their
  assignments have run before the failure, and the interface assigns that
  point instead of going back to the chunk's start.
  """

  def __init__(self, size):
    # Not in any collection: no Saver or initializer of the user's sees
    # them; `reset` initializes them before every run.
    self.x = tf.compat.v1.Variable(
        tf.zeros([size], tf.float64), trainable=False, collections=[],
        use_resource=True, name="best_x")
    self.f = tf.compat.v1.Variable(
        tf.constant(math.inf, tf.float64), trainable=False, collections=[],
        use_resource=True, name="best_f")

  def update(self, x, f):
    """Records float64 `x` with loss `f` if better; TF-level, in the loop."""
    better = (f < self.f) & tf.reduce_all(tf.math.is_finite(x))
    self.x.assign(tf.where(better, x, self.x))
    self.f.assign(tf.where(better, f, self.f))

  def reset(self, x, f):
    return tf.group(self.x.assign(x), self.f.assign(f))


class LbfgsOptimizerInterface(ExternalOptimizerInterface):
  """Minimizes a TF loss with `lbfgs_minimize`, entirely on the device.

  Example (TF2 / Keras):

  ```python
  opt = LbfgsOptimizerInterface(lambda: loss_fn(model(x), y), model,
                                max_iterations=200, jit_compile=True)
  result = opt.minimize()   # the model's variables now hold the optimum
  ```

  Example (TF1 graph):

  ```python
  loss = tf.reduce_sum(tf.square(vector - target))
  opt = LbfgsOptimizerInterface(loss, max_iterations=100)
  with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    opt.minimize(session)   # one session.run per chunk
  ```

  Keyword options: any `lbfgs_minimize` option (`num_correction_pairs`,
  `tolerance`, `x_tolerance`, `f_relative_tolerance`, `f_absolute_tolerance`,
  `max_iterations` (default 50), `max_line_search_iterations`,
  `initial_inverse_hessian_estimate`, `parallel_iterations`,
  `stopping_condition`), plus:

  * `iterations_per_call`: iterations per compiled call (chunk). Default:
    1 when `minimize` gets a callback, all iterations otherwise.
  * `dtype`: the dtype L-BFGS works in. Default: the variables' dtype
    (float64 if they mix dtypes); pass `tf.float64` to solve a float32
    model in float64. Variables keep their own dtype.
  """

  def __init__(self, loss, var_list=None, equalities=None, inequalities=None,
               var_to_bounds=None, *, jit_compile=False, **optimizer_kwargs):
    """See `ExternalOptimizerInterface.__init__`.

    Raises:
      ValueError: `equalities`/`inequalities` given (use
        `ScipyOptimizerInterface`), an unknown option, a bad
        `iterations_per_call` or `dtype`.
    """
    for name, value in (("equalities", equalities),
                        ("inequalities", inequalities)):
      if value:
        raise ValueError(
            "LbfgsOptimizerInterface does not take %s (L-BFGS is "
            "unconstrained); use ScipyOptimizerInterface with method='SLSQP' "
            "or 'trust-constr' for constrained problems." % name)
    unknown = sorted(set(optimizer_kwargs) - set(_LBFGS_OPTIONS)
                     - {"iterations_per_call", "dtype"})
    if unknown:
      raise ValueError(
          "LbfgsOptimizerInterface got unknown option(s) %s; expected "
          "lbfgs_minimize options (%s), iterations_per_call or dtype." %
          (", ".join(unknown), ", ".join(_LBFGS_OPTIONS)))
    ipc = optimizer_kwargs.get("iterations_per_call")
    if ipc is not None and (isinstance(ipc, bool) or not isinstance(
        ipc, (int, np.integer)) or ipc < 1):
      raise ValueError("iterations_per_call must be None or an int >= 1; "
                       "got %r." % (ipc,))
    super().__init__(loss, var_list, None, None, var_to_bounds,
                     jit_compile=jit_compile, **optimizer_kwargs)
    if (self._packed_bounds_arrays is not None
        and "initial_inverse_hessian_estimate" in optimizer_kwargs):
      raise ValueError(
          "initial_inverse_hessian_estimate cannot be combined with "
          "var_to_bounds: the bounded solver lbfgsb_minimize does not take "
          "it.")
    dtype = optimizer_kwargs.get("dtype")
    if dtype is None:
      dtypes = set(self._packer.dtypes)
      dtype = dtypes.pop() if len(dtypes) == 1 else tf.float64
      if dtype not in (tf.float32, tf.float64):
        dtype = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
    else:
      try:
        dtype = tf.as_dtype(dtype)
      except TypeError:
        dtype = None
      if dtype not in (tf.float32, tf.float64):
        raise ValueError("dtype must be None, tf.float32 or tf.float64; got "
                         "%r." % (optimizer_kwargs.get("dtype"),))
    self._dtype = dtype
    self._jit = jit_compile
    self._options = {k: v for k, v in optimizer_kwargs.items()
                     if k in _LBFGS_OPTIONS}
    self._max_iterations = self._options.pop("max_iterations", 50)
    if (isinstance(self._max_iterations, bool)
        or not isinstance(self._max_iterations, (int, np.integer))
        or self._max_iterations < 0):
      raise ValueError("max_iterations must be an int >= 0; got %r." %
                       (self._max_iterations,))
    self._num_pairs = self._options.get("num_correction_pairs", 10)
    self._compiled = None
    self._graph_ops = None
    self._best = None
    if self._evaluator.mode == "graph":
      self._build_graph_ops(loss)

  @property
  def dtype(self):
    """The dtype L-BFGS works in."""
    return self._dtype

  # --- The objective ----------------------------------------------------------

  def _objective_eager(self, x):
    x = tf.cast(x, tf.float64)
    loss, grad = self._evaluator.value_and_gradient_tf(x)
    self._best.update(x, loss)
    return tf.cast(loss, self._dtype), tf.cast(grad, self._dtype)

  def _solve(self, objective, x0, previous, max_iterations):
    if self._packed_bounds_arrays is not None:
      # Bounds known: L-BFGS-B (projected, same driver and results).
      lower, upper = (tf.constant(b, self._dtype)
                      for b in self._packed_bounds_arrays)
      return lbfgsb_minimize(objective, x0, lower_bounds=lower,
                             upper_bounds=upper,
                             previous_optimizer_results=previous,
                             max_iterations=max_iterations, **self._options)
    if previous is not None:
      return lbfgs_minimize(objective, None,
                            previous_optimizer_results=previous,
                            max_iterations=max_iterations, **self._options)
    return lbfgs_minimize(objective, x0, max_iterations=max_iterations,
                          **self._options)

  # --- Eager mode ---------------------------------------------------------------

  def _eager_functions(self):
    if self._compiled is None:
      n, m, dtype = self._packer.size, self._num_pairs, self._dtype
      self._best = _BestSeen(n)
      scalar_i = tf.TensorSpec([], tf.int32)
      prev_spec = LBfgsOptimizerResults(
          converged=tf.TensorSpec([], tf.bool),
          failed=tf.TensorSpec([], tf.bool),
          num_iterations=scalar_i, num_objective_evaluations=scalar_i,
          position=tf.TensorSpec([n], dtype),
          objective_value=tf.TensorSpec([], dtype),
          objective_gradient=tf.TensorSpec([n], dtype),
          position_deltas=tf.TensorSpec([m, n], dtype),
          gradient_deltas=tf.TensorSpec([m, n], dtype))

      def resume(previous, max_iterations):
        return self._solve(self._objective_eager, None, previous,
                           max_iterations)

      # One concrete function, traced once per instance and never retraced:
      # every run, from its first iteration, is a resumed run (see
      # `_numpy_start_results`), which halves the tracing cost.
      self._compiled = tf.function(
          resume, jit_compile=self._jit, autograph=False,
          input_signature=[prev_spec, scalar_i]).get_concrete_function()
    return self._compiled

  def _numpy_start_results(self, x0, run):
    """The results of a 0-iteration run from `x0`, in NumPy.

    Every run starts by resuming from these, so only the resumed solve is
    ever traced (tracing and first-call optimization of the solver loop
    cost seconds), and starting costs one compiled loss-and-gradient call
    (an eager 0-iteration `lbfgs_minimize` costs ~100 ms of op dispatch).
    Mirrors `_driver.initial_state`: converged at a value of -inf or when the
    (projected) gradient's sup-norm is within `tolerance`; failed when the
    start is not finite. The tests check that runs match a direct
    `lbfgs_minimize`/`lbfgsb_minimize` call exactly.
    """
    np_dtype = self._dtype.as_numpy_dtype
    x0 = np.asarray(x0, np.float64)
    if self._packed_bounds_arrays is not None:
      x0 = np.clip(x0, *self._packed_bounds_arrays)
    out, _ = run.value_and_grad(x0)
    x0 = x0.astype(np_dtype)
    f, g = np.asarray(out[0], np_dtype), np.asarray(out[1:], np_dtype)
    finite = bool(np.isfinite(f) and np.isfinite(g).all())
    if self._packed_bounds_arrays is not None:
      lower, upper = self._packed_bounds_arrays
      stationarity = np.abs(np.clip(x0 - g, lower, upper) - x0).max(
          initial=0.)
    else:
      stationarity = np.abs(g).max(initial=0.)
    tolerance = float(self._options.get("tolerance", 1e-8))
    converged = bool(f == -np.inf) or (finite and stationarity <= tolerance)
    m, n = self._num_pairs, self._packer.size
    return LBfgsOptimizerResults(
        converged=np.array(converged), failed=np.array(
            not converged and not finite),
        num_iterations=np.array(0, np.int32),
        num_objective_evaluations=np.array(1, np.int32),
        position=x0, objective_value=f, objective_gradient=g,
        position_deltas=np.zeros([m, n], np_dtype),
        gradient_deltas=np.zeros([m, n], np_dtype))

  # --- Graph mode ---------------------------------------------------------------

  def _build_graph_ops(self, loss):
    packer = self._packer
    dtype, n, m = self._dtype, packer.size, self._num_pairs
    loss_of_values = _graph_loss_function(loss, packer.variables)

    # A function of its own: `tf.gradients` through the imported ops, traced
    # straight into the loop body, loses the loop state's static shapes.
    @tf.function(autograph=False)
    def objective(x):
      x = tf.cast(x, tf.float64)
      values = packer.unpack(x)
      value = loss_of_values(values)
      grads = tf.gradients(value, values)
      value = tf.reshape(value, [])
      self._best.update(x, tf.cast(value, tf.float64))
      return (tf.cast(value, dtype),
              tf.cast(packer.pack_tensors(grads), dtype))

    with loss.graph.as_default(), tf.name_scope("lbfgs_interface"):
      ph = tf.compat.v1.placeholder
      self._best = _BestSeen(n)
      best_x, best_f = ph(tf.float64, [n]), ph(tf.float64, [])
      self._graph_reset = (best_x, best_f, self._best.reset(best_x, best_f))
      max_it = ph(tf.int32, [], name="max_iterations")
      prev = LBfgsOptimizerResults(
          converged=ph(tf.bool, []), failed=ph(tf.bool, []),
          num_iterations=ph(tf.int32, []),
          num_objective_evaluations=ph(tf.int32, []),
          position=ph(dtype, [n]), objective_value=ph(dtype, []),
          objective_gradient=ph(dtype, [n]),
          position_deltas=ph(dtype, [m, n]),
          gradient_deltas=ph(dtype, [m, n]))
      # Only the resumed solve is built: a run starts by resuming from the
      # 0-iteration results (`_numpy_start_results`), which halves the graph.
      with _control_flow_v2():
        resume = self._solve(objective, None, prev, max_it)
    self._graph_ops = (prev, max_it, resume)

  # --- minimize -------------------------------------------------------------------

  def minimize(self, session=None, feed_dict=None, fetches=None,
               step_callback=None, loss_callback=None,
               progress_callback=None, **run_kwargs):
    """Minimizes the loss on the device and assigns the optimum.

    Args: as `ExternalOptimizerInterface.minimize`, except that
      `step_callback(x)`, `loss_callback(*fetched)` and
      `progress_callback(progress)` are called once per chunk of
      `iterations_per_call` iterations, at the chunk's end point (`progress`
      has the solver's own `fun`, `nit` and `nfev` there: no evaluation is
      added). Raising `StopIteration` in any of them ends the run at that
      point.

    Returns:
      A `scipy.optimize.OptimizeResult` with `x` (packed float64 point now
      held by the variables), `fun`, `success` (converged), `status` (0
      converged, 1 max_iterations reached, 2 failed, 99 stopped by a
      callback), `message`, `nit`, `nfev` and `lbfgs_results` (the final
      `LBfgsOptimizerResults`, as NumPy values).

    Raises:
      ValueError: as `ExternalOptimizerInterface.minimize`.
      Any exception raised while running (including `KeyboardInterrupt`)
      propagates after the best finite point evaluated so far (at least
      the last completed chunk's point, or the initial point) has been
      assigned to the variables.
    """
    return super().minimize(session, feed_dict, fetches, step_callback,
                            loss_callback, progress_callback, **run_kwargs)

  def _optimize(self, state):
    """The chunk loop, for `minimize`'s template (`_run.run`)."""
    run = state.run
    graph = self._evaluator.mode == "graph"
    if graph:
      session, run_kwargs = run.session, run.run_kwargs
      feed = run.feed_dict or {}
      prev_ph, max_it_ph, resume_op = self._graph_ops
      best_x_ph, best_f_ph, reset_best = self._graph_reset

      def track_from(x0, f0):
        session.run(reset_best, feed_dict={best_x_ph: x0, best_f_ph: f0},
                    **run_kwargs)

      def best_seen():
        return session.run(self._best.x)

      def resume(previous, max_iterations):
        fd = dict(feed)
        fd.update(zip(prev_ph, previous))
        fd[max_it_ph] = max_iterations
        return session.run(resume_op, feed_dict=fd, **run_kwargs)

      def fetch():
        return session.run(run.fetches, feed_dict=feed or None, **run_kwargs)
    else:
      resume_fn = self._eager_functions()

      def track_from(x0, f0):
        self._best.reset(x0, f0)

      def best_seen():
        return self._best.x.numpy()

      def resume(previous, max_iterations):
        return resume_fn(previous, tf.constant(max_iterations, tf.int32))

      fetch_fn = None
      if state.loss_callback is not None and run.fetches:
        fetch_fn = self._evaluator.value_fn(run.fetches)

      def fetch():
        if fetch_fn is None:
          return []
        _, fetched = fetch_fn(tf.constant(state.best.x))
        return [f.numpy() for f in fetched]

    chunk = self.optimizer_kwargs.get("iterations_per_call")
    if chunk is None:
      chunk = 1 if state.has_callbacks else max(self._max_iterations, 1)
    total = self._max_iterations
    results = self._numpy_start_results(
        state.best.x.astype(self._dtype.as_numpy_dtype), run)
    f0 = float(results.objective_value)
    track_from(results.position.astype(np.float64),
               f0 if math.isfinite(f0) else math.inf)
    # From here on, a failure assigns the best point the loop evaluated.
    state.recover = best_seen
    done = 0
    while True:
      target = min(done + chunk, total)
      results = LBfgsOptimizerResults(
          *[np.asarray(getattr(t, "numpy", lambda t=t: t)())
            for t in resume(results, target)])
      fun = float(results.objective_value)
      # The chunk's end point: what the variables get if the run stops now.
      state.best.set(results.position, fun,
                     results.objective_gradient)
      state.stop_fields["lbfgs_results"] = results
      previous_done, done = done, int(results.num_iterations)
      # Callbacks run once per chunk that made progress.
      if state.has_callbacks and done > previous_done:
        run.assign(state.best.x)
        state.iteration(state.best.x.copy(), fun, nit=done,
                        nfev=int(results.num_objective_evaluations))
        if state.loss_callback is not None:
          _run.call_user(state.loss_callback, *fetch())
      if (bool(results.converged) or bool(results.failed) or done >= total
          # No progress possible in this chunk: stop too.
          or target > done):
        break
    return self._result(results, total)

  @staticmethod
  def _result(r, max_iterations):
    """The `OptimizeResult` of a run that ended with results `r`."""
    fun = float(r.objective_value)
    if bool(r.converged):
      status, message = _STATUS_CONVERGED, "Converged."
    elif bool(r.failed):
      status, message = _STATUS_FAILED, (
          "Failed: the start point is not finite, or no decrease was found "
          "even along steepest descent." if math.isfinite(fun) else
          "Failed: the loss or gradient is not finite at the start point.")
    else:
      status, message = _STATUS_MAX_ITERATIONS, (
          "Stopped after max_iterations=%d iterations." % max_iterations)
    return OptimizeResult(
        x=r.position.astype(np.float64), fun=fun,
        jac=r.objective_gradient.astype(np.float64),
        success=bool(r.converged), status=status, message=message,
        nit=int(r.num_iterations), nfev=int(r.num_objective_evaluations),
        lbfgs_results=r)
