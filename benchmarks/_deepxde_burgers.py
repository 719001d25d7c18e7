"""DeepXDE's Burgers problem on one TensorFlow backend, with and without tf_extopt.

Run as a script in a fresh process whose `DDE_BACKEND` environment variable
(DeepXDE's documented switch) selects `tensorflow` or `tensorflow.compat.v1`;
the last line of its output is a JSON report. `tests/test_clients.py` and
`benchmarks/clients_bench.py` both drive it, so the tests check exactly what
the benchmark measures. It lives with the benchmarks because the report also
carries wall times, which only `clients_bench.py` reads: tests never assert
on speed.

The problem is DeepXDE's own Burgers example (u_t + u u_x = 0.01/pi u_xx on
[-1, 1] x [0, 0.99], u = 0 on the boundary, u(x, 0) = -sin(pi x), a 3 x 20
tanh network), trained with Adam once; every L-BFGS run then starts from the
same Adam weights, so solvers compare from one point.

The swap a user makes is one assignment before `model.compile("L-BFGS")`:

* `tensorflow`: `tfp.optimizer.lbfgs_minimize = tf_extopt.lbfgs_minimize`
  (DeepXDE's `optimizers/tensorflow/tfp_optimizer.py` looks the function up
  on TFP's module at every call);
* `tensorflow.compat.v1`:
  `dde.optimizers.tensorflow_compat_v1.optimizers.ScipyOptimizerInterface =
  tf_extopt.ScipyOptimizerInterface` (`optimizers.get` builds the interface
  from that module global at every `compile`).

Here the assigned object is a thin counting wrapper around the solver
(`tf_extopt`'s, or the original for the baseline), so the report proves which
one ran and what DeepXDE passed to it.
"""

import argparse
import contextlib
import functools
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
# DeepXDE builds its Keras 3 initializers at import, and each draws its seed
# from Python's `random` then, before `dde.config.set_random_seed` can act.
random.seed(0)
import deepxde as dde  # pylint: disable=g-import-not-at-top
from deepxde.backend import tf  # pylint: disable=g-import-not-at-top

import tf_extopt  # pylint: disable=g-import-not-at-top

BACKEND = dde.backend.backend_name
if BACKEND == "tensorflow":
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  BASELINE = "tfp"
  _ORIGINAL = tfp.optimizer.lbfgs_minimize
else:
  BASELINE = "deepxde"
  _ORIGINAL = (
      dde.optimizers.tensorflow_compat_v1.optimizers.ScipyOptimizerInterface)


def build_model(num_domain, seed):
  """DeepXDE's Burgers example with `num_domain` collocation points."""
  dde.config.set_random_seed(seed)

  def pde(x, y):
    dy_x = dde.grad.jacobian(y, x, i=0, j=0)
    dy_t = dde.grad.jacobian(y, x, i=0, j=1)
    dy_xx = dde.grad.hessian(y, x, i=0, j=0)
    return dy_t + y * dy_x - 0.01 / np.pi * dy_xx

  geomtime = dde.geometry.GeometryXTime(dde.geometry.Interval(-1, 1),
                                        dde.geometry.TimeDomain(0, 0.99))
  bc = dde.icbc.DirichletBC(geomtime, lambda x: 0,
                            lambda _, on_boundary: on_boundary)
  ic = dde.icbc.IC(geomtime, lambda x: -np.sin(np.pi * x[:, 0:1]),
                   lambda _, on_initial: on_initial)
  data = dde.data.TimePDE(geomtime, pde, [bc, ic], num_domain=num_domain,
                          num_boundary=80, num_initial=160)
  net = dde.nn.FNN([2] + [20] * 3 + [1], "tanh", "Glorot normal")
  return dde.Model(data, net)


class _Weights:
  """Saves and restores the network's weights, so every run starts alike."""

  def __init__(self, model):
    self.model = model
    if BACKEND == "tensorflow":
      self.variables = model.net.trainable_variables
      self.saved = [v.numpy() for v in self.variables]
    else:
      self.variables = tf.trainable_variables()
      self.saved = model.sess.run(self.variables)

  def restore(self):
    for v, value in zip(self.variables, self.saved):
      if BACKEND == "tensorflow":
        v.assign(value)
      else:
        v.load(value, self.model.sess)


class _Recorder:
  """Installs a counting stand-in for DeepXDE's L-BFGS and records its use."""

  def __init__(self):
    self.calls = 0
    self.kwargs = []      # What DeepXDE passed, per call (TF2 backend).
    self.results = []     # Per call: iterations, evaluations, message...
    # When the first evaluation returned: what precedes it is set-up
    # (DeepXDE traces its loss, or the session optimises a new graph).
    self.first_evaluation = None

  def _mark(self):
    if self.first_evaluation is None:
      self.first_evaluation = time.perf_counter()

  def install(self, solver):
    if BACKEND == "tensorflow":
      function = {
          "tf_extopt": tf_extopt.lbfgs_minimize,
          # The one-line swap with Wolfe steps (no refinement), as the
          # interfaces take them.
          "tf_extopt_wolfe": functools.partial(tf_extopt.lbfgs_minimize,
                                               exact_line_search=False),
      }.get(solver, _ORIGINAL)

      def counted(*args, **kwargs):
        self.calls += 1
        self.kwargs.append({k: v for k, v in kwargs.items()
                            if not tf.is_tensor(v)
                            and k != "previous_optimizer_results"})
        objective, *rest = args

        def timed(x):
          out = objective(x)
          self._mark()
          return out

        results = function(timed, *rest, **kwargs)
        self.results.append(dict(
            iterations=int(results.num_iterations),
            evaluations=int(results.num_objective_evaluations),
            converged=bool(results.converged), failed=bool(results.failed),
            resumed=kwargs.get("previous_optimizer_results") is not None,
            memory=int(results.position_deltas.shape[0]),
            module=type(results).__module__))
        return results

      tfp.optimizer.lbfgs_minimize = counted
    else:
      base = (tf_extopt.ScipyOptimizerInterface if solver == "tf_extopt"
              else _ORIGINAL)
      recorder = self

      class Counted(base):
        def __init__(self, *args, **kwargs):
          recorder.calls += 1
          recorder.kwargs.append(dict(kwargs))
          super().__init__(*args, **kwargs)

        def minimize(self, session=None, feed_dict=None, fetches=None,
                     step_callback=None, loss_callback=None):
          def timed(*fetched):
            recorder._mark()  # pylint: disable=protected-access
            if loss_callback is not None:
              loss_callback(*fetched)

          result = super().minimize(session, feed_dict, fetches,
                                    step_callback, timed)
          if result is not None:  # DeepXDE's copy returns nothing.
            recorder.results.append(dict(
                iterations=int(result.nit), evaluations=int(result.nfev),
                message=str(result.message), success=bool(result.success)))
          return result

      dde.optimizers.tensorflow_compat_v1.optimizers.ScipyOptimizerInterface = (
          Counted)


class _ScipySpy:
  """Records what `scipy.optimize.minimize` saw, for DeepXDE's own copy.

  DeepXDE's contrib copy returns only the point, so its stopping message and
  the losses it was given are read here; the spy passes everything through.
  """

  def __enter__(self):
    import scipy.optimize  # pylint: disable=g-import-not-at-top
    self.module, self.original = scipy.optimize, scipy.optimize.minimize
    self.losses, self.result = [], None

    def minimize(fun, x0, *args, **kwargs):
      def recorded(x):
        value, grad = fun(x)
        self.losses.append(float(value))
        return value, grad
      self.result = self.original(recorded, x0, *args, **kwargs)
      return self.result

    scipy.optimize.minimize = minimize
    return self

  def __exit__(self, *exc):
    self.module.minimize = self.original

  def report(self):
    if self.result is None:
      return {}
    return dict(scipy_message=str(self.result.message),
                scipy_iterations=int(self.result.nit),
                scipy_evaluations=len(self.losses),
                distinct_losses=len(set(self.losses)))


def total_loss(model):
  return float(np.sum(model.train_state.loss_train))


def run_lbfgs(model, solver, options):
  """One `compile("L-BFGS")` + `train()` with `solver` swapped in."""
  dde.optimizers.set_LBFGS_options(**options)
  recorder = _Recorder()
  recorder.install(solver)
  model.compile("L-BFGS")
  step = model.train_state.step
  spy = _ScipySpy() if solver == "deepxde" else None
  start = time.perf_counter()
  with spy or contextlib.nullcontext():
    model.train(display_every=10**9, verbose=0)
  end = time.perf_counter()
  report = dict(solver=solver, options=dict(options), calls=recorder.calls,
                seconds=end - start, loss=total_loss(model),
                solve_seconds=end - (recorder.first_evaluation or start),
                steps=int(model.train_state.step - step),
                results=recorder.results,
                kwargs=[{k: _jsonable(v) for k, v in kw.items()}
                        for kw in recorder.kwargs])
  report["iterations"] = sum(r["iterations"] for r in recorder.results)
  report["evaluations"] = sum(r["evaluations"] for r in recorder.results)
  if spy is not None:
    report.update(spy.report())
    report["iterations"] = report.get("scipy_iterations", 0)
    report["evaluations"] = report.get("scipy_evaluations", 0)
  return report


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  if isinstance(value, (int, float, str, bool)) or value is None:
    return value
  return repr(value)


def run_resume(model, iterations):
  """TF2 only: 2k iterations in one call against k, then k more resumed.

  Both start from the same weights and go through DeepXDE's own
  `train_step` (what `_train_tensorflow_tfp` calls), the second time with
  `previous_optimizer_results`.
  """
  weights = _Weights(model)
  dde.optimizers.set_LBFGS_options(maxiter=2 * iterations)
  recorder = _Recorder()
  recorder.install("tf_extopt")
  model.compile("L-BFGS")
  state = model.train_state
  state.set_data_train(*model.data.train_next_batch(None))
  args = (state.X_train, state.y_train, state.train_aux_vars)
  whole = model.train_step(*args)
  whole_weights = [v.numpy() for v in weights.variables]
  weights.restore()
  dde.optimizers.set_LBFGS_options(maxiter=iterations)
  model.compile("L-BFGS")
  first = model.train_step(*args)
  dde.optimizers.set_LBFGS_options(maxiter=2 * iterations)
  model.compile("L-BFGS")
  second = model.train_step(*args, previous_optimizer_results=first)
  split_weights = [v.numpy() for v in weights.variables]
  weights.restore()
  return dict(
      calls=recorder.calls, results=recorder.results,
      whole_loss=float(whole.objective_value),
      split_loss=float(second.objective_value),
      first_loss=float(first.objective_value),
      max_weight_difference=max(
          float(np.max(np.abs(a - b)))
          for a, b in zip(whole_weights, split_weights)))


def run_inverse(maxiter, seed):
  """An inverse problem: y' = C y with C trainable, observed y = exp(x / 2).

  DeepXDE adds the external variable C to the optimised variables and, on
  the compat.v1 backend, to the `fetches` given to `loss_callback`; there it
  is a TF1 reference variable, not a resource variable.
  """
  dde.config.set_random_seed(seed)
  c = dde.Variable(2.0)
  x_obs = np.linspace(0, 1, 20)[:, None]
  data = dde.data.PDE(
      dde.geometry.Interval(0, 1),
      lambda x, y: dde.grad.jacobian(y, x) - c * y,
      [dde.icbc.PointSetBC(x_obs, np.exp(0.5 * x_obs))], num_domain=40,
      anchors=x_obs)
  model = dde.Model(data, dde.nn.FNN([1, 16, 16, 1], "tanh", "Glorot normal"))
  model.compile("adam", lr=1e-3, external_trainable_variables=c)
  model.train(iterations=300, display_every=10**9, verbose=0)
  adam_loss = total_loss(model)
  dde.optimizers.set_LBFGS_options(maxiter=maxiter)
  recorder = _Recorder()
  recorder.install("tf_extopt")
  model.compile("L-BFGS", external_trainable_variables=c)
  model.train(display_every=10**9, verbose=0)
  value = c.numpy() if BACKEND == "tensorflow" else model.sess.run(c)
  return dict(variable_type=type(c).__name__, c=float(value),
              adam_loss=adam_loss, loss=total_loss(model),
              calls=recorder.calls, results=recorder.results)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--domain", type=int, default=2540,
                      help="collocation points inside the domain")
  parser.add_argument("--adam", type=int, default=1000, help="Adam steps")
  parser.add_argument("--runs", default="[]",
                      help="JSON list of {solver, options} L-BFGS runs, "
                      "each from the Adam weights; solver is 'tf_extopt', "
                      "'tf_extopt_wolfe' (tensorflow backend) or "
                      "'baseline'")
  parser.add_argument("--resume", type=int, default=0,
                      help="TF2 only: also compare k + k resumed iterations "
                      "with 2k in one run")
  parser.add_argument("--inverse", type=int, default=0,
                      help="also solve a small inverse problem with this "
                      "L-BFGS maxiter")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--float64", action="store_true",
                      help="dde.config.set_default_float('float64')")
  args = parser.parse_args(argv)

  if args.float64:
    dde.config.set_default_float("float64")
  model = build_model(args.domain, args.seed)
  model.compile("adam", lr=1e-3)
  start = time.perf_counter()
  model.train(iterations=args.adam, display_every=10**9, verbose=0)
  report = dict(backend=BACKEND, baseline=BASELINE,
                float=dde.config.real(tf).name, adam_loss=total_loss(model),
                adam_seconds=time.perf_counter() - start, runs=[])
  weights = _Weights(model)
  report["variable_types"] = sorted({type(v).__name__
                                     for v in weights.variables})
  for run in json.loads(args.runs):
    weights.restore()
    solver = run["solver"]
    solver = BASELINE if solver == "baseline" else solver
    report["runs"].append(run_lbfgs(model, solver, run.get("options", {})))
  if args.resume:
    if BACKEND != "tensorflow":
      parser.error("--resume applies to the tensorflow backend only")
    weights.restore()
    report["resume"] = run_resume(model, args.resume)
  if args.inverse:  # Last: on compat.v1 it initialises the whole graph.
    report["inverse"] = run_inverse(args.inverse, args.seed)
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main(sys.argv[1:])
