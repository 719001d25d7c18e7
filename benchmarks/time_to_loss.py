"""Wall time to a loss: every way to finish training with L-BFGS, side by side.

Users pay in wall time to a given loss, tracing included, not in iterations.
This script trains each model the way a user would with each L-BFGS path,
from the same Adam-trained weights, at budgets of 25, 50, 100, 200 and 400
iterations, and reports the least wall time each path needed to reach the
loss that the SciPy path reached at each budget.

Run:
  python benchmarks/time_to_loss.py [--models pinn,mlp_small,...]
      [--budgets 25,50,100,200,400] [--quick] [--out DIR]

`--quick` is a smoke run (tiny data, budgets 5 and 10, no untimed first
calls); its numbers mean nothing.
`--out DIR` also writes one PNG per model, the loss against wall time with
one curve per path (matplotlib is imported only then).

Models (`--models`, default all):

* `pinn`: `examples/pinn_burgers.py`'s viscous Burgers PINN, 2540
  collocation and 300 initial/boundary points, 3 x 20 tanh (921 float32
  weights), after 200 Adam steps.
* `mlp_small`: the Keras 3 MLP of `keras_bench.py` (`_models.make_problem`,
  8-16-16-1 tanh, MSE), 256 samples, 433 weights, after 20 Adam epochs
  (Keras' default batches of 32). An evaluation costs less than the
  on-device loop's own work per iteration (the README's Keras section):
  per-iteration overhead dominates.
* `mlp_large`: the same MLP with 4096 samples and width 64 (8-64-64-1, 4801
  weights), 20 Adam epochs: evaluations dominate.
* `deepxde`: DeepXDE's Burgers example (2540 collocation points, 3 x 20
  tanh, 1000 Adam steps), through `clients_bench.py`'s worker
  (`_deepxde_burgers.py`), one process per backend, with DeepXDE's L-BFGS
  options (`maxcor=100`, `gtol=1e-8`, `maxiter` the budget, and for SciPy
  `maxfun=1.25 maxiter`): on
  `tensorflow` its default (TFP's `lbfgs_minimize`, called eagerly) and
  `tf_extopt.lbfgs_minimize` swapped in; on `tensorflow.compat.v1`,
  `tf_extopt.ScipyOptimizerInterface` swapped in (the SciPy path; DeepXDE's
  own copy makes no progress there, see the README).
* `svgp`: a GPflow SVGP (1000 points of a 1-D function, 50 inducing points,
  squared-exponential kernel, Gaussian likelihood, float64), after 100 Adam
  steps, with `model.training_loss_closure(data)` as the loss.

Paths, each a fresh call as a user makes it, with the defaults but the
budget:

* `on-device`: `tf_extopt.LbfgsOptimizerInterface(loss, var_list,
  max_iterations=k).minimize()`; `on-device XLA` the same with
  `jit_compile=True`.
* `SciPy`: `tf_extopt.ScipyOptimizerInterface(loss, var_list,
  method='L-BFGS-B', options={'maxiter': k}).minimize()`.
* `TFP`: `tfp.optimizer.lbfgs_minimize(max_iterations=k)` inside a new
  `tf.function`, on one flat vector of the variables, with an objective that
  assigns the vector to the variables and returns the loss and the flat
  gradient (DeepXDE's `LossAndFlatGradient` recipe). TFP's other defaults
  are kept (10 correction pairs, as the other paths'; DeepXDE's 100 are in
  the `deepxde` model).
* Keras models also: `keras.fit` (`tf_extopt.keras.fit(model, x, y,
  max_iterations=k, verbose=0)`, the default `method='auto'`: SciPy's
  L-BFGS-B below 200 iterations on a CPU, on the device from 200),
  `keras.fit lbfgs` (`method='lbfgs'`, always on the device), `keras.fit
  XLA` (`jit_compile=True`, on the device) and `keras.fit L-BFGS-B`
  (`method='L-BFGS-B'`, through SciPy).
* `svgp` also: `gpflow Scipy` (`gpflow.optimizers.Scipy().minimize(loss,
  variables, options={'maxiter': k})`).

Protocol. Each model is built and trained with Adam once; its weights are
saved and restored before every run. Every path first makes one untimed
call of 2 iterations, so that process-wide first-call costs (kernels,
imports) hit no timed run; every timed run then builds its interface (or
`tf.function`, or calls `keras.fit`) anew and pays its own tracing and
compilation, as a user's call does. The time is `time.perf_counter()`
around that whole call. The loss is then evaluated at the final weights by
one compiled function of the model's loss, the same for all paths;
iterations and evaluations are the solver's own counts (`nit`/`nfev`, TFP's
`num_iterations`/`num_objective_evaluations`). Within a budget the paths run
one after another, the order rotated by one path per budget, so a busy spell
does not always hit the same path. DeepXDE's two backends run in two
processes one after the other (each alternates its own paths), and its time
is the whole `train()`, its loss DeepXDE's training loss after it.

Columns:

* one per budget `k`: the target, the SciPy path's loss after `k`
  iterations; per path the least wall time among its runs whose loss is at
  or below the target (any budget), and in brackets the speed-up: the least
  time of the baselines (SciPy and TFP; for `svgp` also `gpflow Scipy`;
  for `deepxde` its TFP default and SciPy on compat.v1) over the path's,
  above 1 when the path is faster than all of them. "not reached" when no
  run of the path got there.
* `evaluations / iteration`: the median over budgets of `nfev / nit`.
* `first call`, `second call`: the run at the largest budget, then the same
  already-built interface or `tf.function` called again from the same
  start (restored weights). `of which tracing` is their difference.
  `keras.fit` builds its interface at every call, and DeepXDE builds a new
  objective at every `train()`, so there is no second call to time ("n/a").

A path whose call raised (say, XLA refusing an op) gets "(failed: ...)"
after its name, and the error on stderr; the other paths go on.

The summary gives per model and path the targets reached and the speed-up
at the last (lowest) target.
"""

import argparse
import os
import shlex
import statistics
import sys
import time
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _models  # pylint: disable=g-import-not-at-top,wrong-import-position
import clients_bench  # pylint: disable=g-import-not-at-top,wrong-import-position

import tf_extopt  # pylint: disable=g-import-not-at-top,wrong-import-position
import tf_extopt.keras  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODELS = ("pinn", "mlp_small", "mlp_large", "deepxde", "svgp")
_BUDGETS = "25,50,100,200,400"
_QUICK_BUDGETS = "5,10"
# The untimed first call of every path (see the module docstring).
_WARM_UP_ITERATIONS = 2
SCIPY = "SciPy"
TFP = "TFP"


class Path(typing.NamedTuple):
  """One way to run L-BFGS on a model.

  Attributes:
    name: The row's label.
    start: `start(budget)` builds what a user builds and runs it for at most
      `budget` iterations; returns `(iterations, evaluations, again)`, where
      `again()` runs the same built object once more and returns
      `(iterations, evaluations)`, or is None when the path rebuilds at
      every call.
    baseline: Whether the path is a baseline of the speed-ups.
  """
  name: str
  start: typing.Callable
  baseline: bool = False


class Problem(typing.NamedTuple):
  """A model trained in this process, and its paths."""
  description: str
  loss: typing.Callable        # The common loss, a `tf.function`.
  variables: list              # What every run restores.
  saved: list                  # Their values after Adam.
  paths: list


class Run(typing.NamedTuple):
  """One timed call. `error` is set (and the numbers NaN) if it raised."""
  path: str
  budget: int
  seconds: float
  loss: float
  iterations: float
  evaluations: float
  error: str = ""


class Measured(typing.NamedTuple):
  """A model's results: what the tables and plots are made of."""
  name: str
  description: str
  start_loss: float
  paths: list                  # Row labels, in order.
  baselines: list
  target: str                  # The path whose losses are the targets.
  runs: list                   # `Run`s.
  second: dict                 # Path -> second call's seconds, or None.
  notes: list


# --- Paths -------------------------------------------------------------------


def _counts(result):
  return int(result.nit), int(result.nfev)


def on_device(loss, var_list, jit_compile=False):
  """`LbfgsOptimizerInterface` with its defaults (and XLA if asked)."""
  def start(budget):
    opt = tf_extopt.LbfgsOptimizerInterface(loss, var_list,
                                            max_iterations=budget,
                                            jit_compile=jit_compile)
    return _counts(opt.minimize()) + (lambda: _counts(opt.minimize()),)
  return Path("on-device XLA" if jit_compile else "on-device", start)


def scipy_path(loss, var_list):
  """`ScipyOptimizerInterface` with SciPy's L-BFGS-B defaults."""
  def start(budget):
    opt = tf_extopt.ScipyOptimizerInterface(loss, var_list,
                                            method="L-BFGS-B",
                                            options={"maxiter": budget})
    return _counts(opt.minimize()) + (lambda: _counts(opt.minimize()),)
  return Path(SCIPY, start, baseline=True)


def tfp_solver(loss, variables, max_iterations):
  """TFP's L-BFGS on the variables, in one `tf.function`.

  DeepXDE's recipe (`optimizers/tensorflow/tfp_optimizer.py`): the
  objective assigns a flat vector to the variables, then returns the loss
  and the flat gradient; the optimum is assigned at the end.

  Returns:
    A `tf.function` of no argument returning `(iterations, evaluations)`.
  """
  shapes = [v.shape for v in variables]
  sizes = [int(np.prod(shape)) for shape in shapes]

  def assign(flat):
    for v, piece, shape in zip(variables, tf.split(flat, sizes), shapes):
      v.assign(tf.reshape(piece, shape))

  def value_and_gradients(flat):
    assign(flat)
    with tf.GradientTape() as tape:
      value = loss()
    grads = tape.gradient(value, variables)
    return value, tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)

  @tf.function(autograph=False)
  def solve():
    start = tf.concat([tf.reshape(v, [-1]) for v in variables], axis=0)
    results = tfp.optimizer.lbfgs_minimize(value_and_gradients, start,
                                           max_iterations=max_iterations)
    assign(results.position)
    return results.num_iterations, results.num_objective_evaluations

  return solve


def tfp_path(loss, variables):
  """TFP's `lbfgs_minimize` as `tfp_solver` runs it."""
  def start(budget):
    solve = tfp_solver(loss, variables, budget)
    again = lambda: tuple(int(n) for n in solve())
    return again() + (again,)
  return Path(TFP, start, baseline=True)


def keras_fit_path(model, x, y, name, **kwargs):
  """`tf_extopt.keras.fit` with `kwargs` (`method`, `jit_compile`)."""
  def start(budget):
    history = tf_extopt.keras.fit(model, x, y, max_iterations=budget,
                                  verbose=0, **kwargs)
    return _counts(history.result) + (None,)
  return Path(name, start)


def gpflow_path(loss, variables):
  """`gpflow.optimizers.Scipy`, a new one per call as in GPflow's docs."""
  import gpflow  # pylint: disable=g-import-not-at-top

  def start(budget):
    opt = gpflow.optimizers.Scipy()
    run = lambda: _counts(opt.minimize(loss, variables,
                                       options={"maxiter": budget}))
    return run() + (run,)
  return Path("gpflow Scipy", start, baseline=True)


def _tf_variables(model):
  # Keras 3 variables wrap a `tf.Variable`; TFP's objective assigns and
  # differentiates the `tf.Variable`s themselves.
  return [getattr(v, "_value", v) for v in model.trainable_variables]


# --- Models ------------------------------------------------------------------


def _compiled(loss):
  # The common loss of a model's runs. AutoGraph would only warn about the
  # examples' lambdas: the losses have no tensor-dependent Python control.
  return tf.function(loss, autograph=False)


def build_pinn(quick):
  example = _models.load_example("pinn_burgers")
  collocation, boundary, width, depth, adam = (
      (200, 20, 8, 2, 20) if quick else (2540, 100, 20, 3, 200))
  xt, edges, values = example.make_points(collocation, boundary)
  model = example.make_model(width, depth)
  loss = example.make_loss(model, xt, edges, values)
  example.train_adam(model, loss, adam)
  variables = _tf_variables(model)
  n = sum(int(np.prod(v.shape)) for v in variables)
  return Problem(
      "Burgers PINN (`examples/pinn_burgers.py`), %d collocation + %d "
      "initial/boundary points, %d x %d tanh (%d float32 weights), %d Adam "
      "steps" % (collocation, 3 * boundary, depth, width, n, adam),
      _compiled(loss), variables, [v.numpy() for v in variables],
      [on_device(loss, model), on_device(loss, model, jit_compile=True),
       scipy_path(loss, model), tfp_path(loss, variables)])


def build_mlp(samples, width, epochs):
  model, loss, variables, _ = _models.make_problem(samples, width)
  x, y = _models.make_data(samples)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
  model.fit(x, y, epochs=epochs, verbose=0)
  n = sum(int(np.prod(v.shape)) for v in variables)
  return Problem(
      "Keras %s MLP %d-%d-%d-1 tanh, MSE, %d samples (%d float32 weights), "
      "%d Adam epochs" % (keras.__version__, _models.FEATURES, width, width,
                          samples, n, epochs),
      _compiled(loss), variables, [v.numpy() for v in variables],
      [on_device(loss, model), on_device(loss, model, jit_compile=True),
       scipy_path(loss, model), tfp_path(loss, variables),
       keras_fit_path(model, x, y, "keras.fit"),
       keras_fit_path(model, x, y, "keras.fit lbfgs", method="lbfgs"),
       keras_fit_path(model, x, y, "keras.fit XLA", jit_compile=True),
       keras_fit_path(model, x, y, "keras.fit L-BFGS-B",
                      method="L-BFGS-B")])


def build_svgp(quick):
  import gpflow  # pylint: disable=g-import-not-at-top
  import gpflow.keras  # pylint: disable=g-import-not-at-top
  points, inducing, adam = (200, 10, 10) if quick else (1000, 50, 100)
  rng = np.random.default_rng(0)
  # GPflow's SVGP tutorial's function and noise.
  x = rng.uniform(-1, 1, (points, 1))
  y = (np.sin(3 * np.pi * x) + 0.3 * np.cos(9 * np.pi * x)
       + 0.5 * np.sin(7 * np.pi * x) + 0.2 * rng.normal(size=x.shape))
  model = gpflow.models.SVGP(
      gpflow.kernels.SquaredExponential(), gpflow.likelihoods.Gaussian(),
      x[:inducing].copy(), num_data=points)
  loss = model.training_loss_closure((x, y))
  variables = list(model.trainable_variables)
  # GPflow's own pick of Keras (tf_keras where installed), as its tutorials.
  adam_optimizer = gpflow.keras.tf_keras.optimizers.Adam(0.01)

  @tf.function
  def adam_step():
    adam_optimizer.minimize(loss, variables)

  for _ in range(adam):
    adam_step()
  n = sum(int(np.prod(v.shape)) for v in variables)
  return Problem(
      "GPflow %s SVGP, %d points, %d inducing points, squared exponential, "
      "Gaussian likelihood (%d float64 parameters), %d Adam steps"
      % (gpflow.__version__, points, inducing, n, adam),
      _compiled(loss), variables, [v.numpy() for v in variables],
      [on_device(loss, variables),
       on_device(loss, variables, jit_compile=True),
       scipy_path(loss, variables), gpflow_path(loss, variables),
       tfp_path(loss, variables)])


# --- Running -----------------------------------------------------------------


def _rotated(items, shift):
  shift %= len(items)
  return items[shift:] + items[:shift]


def _call(path, budget):
  """`(iterations, evaluations, again)`, or the error's one-line text."""
  try:
    return path.start(budget)
  except Exception as e:  # pylint: disable=broad-except
    # One path failing (say, XLA refusing an op) must not end the others'.
    first_line = (str(e).strip().splitlines() or [""])[0]
    # Short, and with no "|" to break the Markdown table it goes in.
    text = ("%s: %s" % (type(e).__name__, first_line))[:100].replace("|", "/")
    print("  %s failed at %d iterations: %s" % (path.name, budget, text),
          file=sys.stderr)
    return text


def run_problem(name, problem, budgets, warm_up=True):
  """Times every path of `problem` at every budget; returns `Measured`.

  Args:
    name: The model's name in the tables.
    problem: A `Problem`.
    budgets: Iteration budgets, in the order run.
    warm_up: Make each path's untimed first call (see the module docstring).
  """
  def restore():
    for v, value in zip(problem.variables, problem.saved):
      v.assign(value)

  start_loss = float(problem.loss())
  for path in problem.paths if warm_up else ():
    restore()
    _call(path, _WARM_UP_ITERATIONS)
  runs, second = [], {}
  for i, budget in enumerate(budgets):
    for path in _rotated(problem.paths, i):
      restore()
      began = time.perf_counter()
      out = _call(path, budget)
      seconds = time.perf_counter() - began
      if isinstance(out, str):
        runs.append(Run(path.name, budget, seconds, *[float("nan")] * 3,
                        error=out))
        continue
      iterations, evaluations, again = out
      runs.append(Run(path.name, budget, seconds, float(problem.loss()),
                      iterations, evaluations))
      if budget == max(budgets):
        second[path.name] = None
        if again is not None:
          restore()
          began = time.perf_counter()
          again()
          second[path.name] = time.perf_counter() - began
  restore()
  return Measured(name, problem.description, start_loss,
                  [p.name for p in problem.paths],
                  [p.name for p in problem.paths if p.baseline], SCIPY,
                  runs, second, [])


_DEEPXDE_PATHS = {
    ("tensorflow", "baseline"): "TFP (DeepXDE's default)",
    ("tensorflow", "tf_extopt"): "tf_extopt.lbfgs_minimize",
    ("tensorflow", "tf_extopt_wolfe"):
        "tf_extopt.lbfgs_minimize, exact_line_search=False",
    ("tensorflow.compat.v1", "tf_extopt"): "SciPy (compat.v1)",
}


def run_deepxde(quick, budgets, seed=0):
  """DeepXDE's Burgers on both TF backends, through the clients' worker.

  `quick` means tiny sizes and no untimed first calls.
  """
  domain, adam = (200, 50) if quick else (2540, 1000)
  runs, adam_losses = [], {}
  for backend in ("tensorflow", "tensorflow.compat.v1"):
    solvers = [s for b, s in _DEEPXDE_PATHS if b == backend]
    warm_up = [] if quick else [(s, _WARM_UP_ITERATIONS) for s in solvers]
    order = list(warm_up)
    for i, budget in enumerate(budgets):
      order += [(s, budget) for s in _rotated(solvers, i)]
    report = clients_bench.run_worker(
        backend,
        [{"solver": s, "options": {"maxiter": k, "maxcor": 100}}
         for s, k in order], domain, adam, seed)
    adam_losses[backend] = report["adam_loss"]
    for (solver, budget), run in list(zip(order, report["runs"]))[
        len(warm_up):]:
      runs.append(Run(_DEEPXDE_PATHS[backend, solver], budget,
                      run["seconds"], run["loss"], run["iterations"],
                      run["evaluations"]))
  losses = list(adam_losses.values())
  # Each backend runs its own Adam phase from the same seed: the two starts
  # can differ, and the note says by how much.
  notes = ["The two backends' Adam phases (same seed) ended at losses %s "
           "(relative difference %.1e); each backend's paths start from its "
           "own." % (" and ".join("%.6e (`%s`)" % (loss, backend)
                                  for backend, loss in adam_losses.items()),
                     abs(losses[0] - losses[1]) / abs(losses[0]))]
  paths = list(_DEEPXDE_PATHS.values())
  return Measured(
      "deepxde",
      "DeepXDE %s Burgers example, %d collocation points, 3 x 20 tanh "
      "(float32), %d Adam steps; DeepXDE's L-BFGS options (maxcor=100)"
      % (_deepxde_version(), domain, adam),
      adam_losses["tensorflow"], paths, [paths[0], paths[3]], paths[3],
      runs, {p: None for p in paths}, notes)


def _deepxde_version():
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return metadata.version("deepxde")


# --- Reporting ---------------------------------------------------------------


def targets(measured):
  """`{budget: loss}` of the target path's runs."""
  return {r.budget: r.loss for r in measured.runs
          if r.path == measured.target and not r.error}


def least_time(measured, path, target):
  """The least seconds of `path`'s runs reaching `target`, or None."""
  times = [r.seconds for r in measured.runs
           if r.path == path and not r.error and r.loss <= target]
  return min(times) if times else None


def evaluations_per_iteration(measured, path):
  """The median over `path`'s runs of evaluations per iteration, or None."""
  ratios = [r.evaluations / r.iterations for r in measured.runs
            if r.path == path and not r.error and r.iterations]
  return statistics.median(ratios) if ratios else None


def speed_ups(measured):
  """`{path: {budget: (seconds or None, speed-up or None)}}`."""
  table = {}
  for budget, target in sorted(targets(measured).items()):
    base = [least_time(measured, p, target) for p in measured.baselines]
    base = min([t for t in base if t is not None], default=None)
    for path in measured.paths:
      seconds = least_time(measured, path, target)
      ratio = (base / seconds if seconds is not None and base is not None
               else None)
      table.setdefault(path, {})[budget] = (seconds, ratio)
  return table


def _names(names):
  return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1
          else "".join(names))


def _fmt(value, pattern):
  return "n/a" if value is None else pattern % value


def print_model(measured):
  """Prints the model's Markdown table (see the module docstring)."""
  print("#### `%s`: %s\n" % (measured.name, measured.description))
  print("Start loss %.4e. Targets: the %s path's loss after each budget of "
        "iterations; cells: least wall time to the target (speed-up over "
        "the best of %s).\n" % (measured.start_loss, measured.target,
                                _names(measured.baselines)))
  goals = targets(measured)
  table = speed_ups(measured)
  largest = max(r.budget for r in measured.runs)
  print("| path | " + " | ".join("%d it.: %.3e" % item
                                  for item in sorted(goals.items()))
        + " | evaluations / iteration | first call at %d it. (s) | second "
        "call (s) | of which tracing (s) |" % largest)
  print("|---|" + "---:|" * (len(goals) + 4))
  for path in measured.paths:
    cells = []
    for budget in sorted(goals):
      seconds, ratio = table.get(path, {}).get(budget, (None, None))
      cells.append("not reached" if seconds is None else
                   "%.2f s (%s)" % (seconds, _fmt(ratio, "%.2fx")))
    first = [r for r in measured.runs
             if r.path == path and r.budget == largest]
    errors = [r.error for r in measured.runs if r.path == path and r.error]
    first = first[0].seconds if first and not first[0].error else None
    second = measured.second.get(path)
    tracing = (first - second
               if first is not None and second is not None else None)
    print("| %s | %s | %s | %s | %s | %s |" % (
        path + (" (failed: %s)" % errors[0] if errors else ""),
        " | ".join(cells),
        _fmt(evaluations_per_iteration(measured, path), "%.2f"),
        _fmt(first, "%.2f"), _fmt(second, "%.2f"), _fmt(tracing, "%.2f")))
  for note in measured.notes:
    print("\n" + note)
  print()


def print_summary(all_measured):
  """Prints one row per model and path: targets reached, last speed-up."""
  print("#### Summary: speed-up to the SciPy path's loss at the largest "
        "budget (least time of the best baseline over the path's)\n")
  print("| model | path | targets reached | time to the last target (s) | "
        "speed-up there | evaluations / iteration |")
  print("|---|---|---:|---:|---:|---:|")
  for measured in all_measured:
    table = speed_ups(measured)
    for path in measured.paths:
      cells = table.get(path, {})
      reached = sum(1 for s, _ in cells.values() if s is not None)
      seconds, ratio = cells[max(cells)] if cells else (None, None)
      print("| %s | %s | %d/%d | %s | %s | %s |" % (
          measured.name, path, reached, len(cells), _fmt(seconds, "%.2f"),
          _fmt(ratio, "%.2fx"),
          _fmt(evaluations_per_iteration(measured, path), "%.2f")))
  print()


def plot(measured, out):
  """One PNG: loss against wall time, a curve per path; returns its path."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  losses = []
  for path in measured.paths:
    runs = sorted((r for r in measured.runs if r.path == path and not r.error),
                  key=lambda r: r.budget)
    if not runs:
      continue
    style = "--" if path in measured.baselines else "-"
    ax.plot([r.seconds for r in runs], [r.loss for r in runs], style,
            marker="o", markersize=4, label=path)
    losses += [r.loss for r in runs]
  # GPflow's loss, the negative ELBO, can be negative: no log scale then.
  if min(losses) > 0:
    ax.set_yscale("log")
  # Tracing adds seconds to some calls and not others, and the budgets
  # double: a log time axis keeps every path's curve readable.
  ax.set_xscale("log")
  ax.set_xlabel("wall time of the call (s), tracing included")
  ax.set_ylabel("training loss")
  ax.set_title("%s: loss against wall time from %.3e after Adam\n(one "
               "point per budget: %s iterations)" % (
                   measured.name, measured.start_loss, ", ".join(
                       str(b) for b in sorted({r.budget
                                               for r in measured.runs}))),
               fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(out, "time_to_loss_%s.png" % measured.name)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(_MODELS),
                      help="comma-separated subset of " + ",".join(_MODELS))
  parser.add_argument("--budgets", default=None,
                      help="iteration budgets (default %s; %s with --quick)"
                      % (_BUDGETS, _QUICK_BUDGETS))
  parser.add_argument("--quick", action="store_true",
                      help="tiny data and budgets (a smoke run)")
  parser.add_argument("--out", default=None,
                      help="folder for one PNG per model (needs matplotlib)")
  args = parser.parse_args(argv)
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = sorted(set(models) - set(_MODELS))
  if unknown:
    parser.error("unknown model(s) %s; choose from %s"
                 % (", ".join(unknown), ", ".join(_MODELS)))
  budgets = [int(b) for b in
             (args.budgets or (_QUICK_BUDGETS if args.quick else _BUDGETS))
             .split(",")]
  if not budgets or min(budgets) < 1:
    parser.error("--budgets must be positive integers")

  # Every run builds a new `tf.function` on purpose (a user's fresh call);
  # TF would warn about the retracing at every run.
  tf.get_logger().setLevel("ERROR")
  print("`python %s`\n" % " ".join(shlex.quote(a) for a in
                                    [os.path.relpath(sys.argv[0])]
                                    + sys.argv[1:]))
  print("TF %s, Keras %s, TFP %s; %d CPU cores; load average at start %.2f"
        "\n" % (tf.__version__, keras.__version__, tfp.__version__,
                os.cpu_count(), os.getloadavg()[0]), flush=True)
  builders = {
      "pinn": lambda: build_pinn(args.quick),
      "mlp_small": lambda: build_mlp(*((64, 8, 2) if args.quick
                                       else (256, 16, 20))),
      "mlp_large": lambda: build_mlp(*((512, 16, 2) if args.quick
                                       else (4096, 64, 20))),
      "svgp": lambda: build_svgp(args.quick),
  }
  all_measured = []
  for name in models:
    print("(%s...)" % name, file=sys.stderr, flush=True)
    if name == "deepxde":
      measured = run_deepxde(args.quick, budgets)
    else:
      measured = run_problem(name, builders[name](), budgets,
                             warm_up=not args.quick)
    all_measured.append(measured)
    print_model(measured)
    sys.stdout.flush()
    if args.out:
      os.makedirs(args.out, exist_ok=True)
      print("Plot: %s\n" % plot(measured, args.out))
  print_summary(all_measured)


if __name__ == "__main__":
  main()
