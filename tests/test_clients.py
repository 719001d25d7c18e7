"""Integration tests: DeepXDE (both TF backends) and GPflow run on tf_extopt.

Real libraries, nothing mocked (they come with the `test` extra).

DeepXDE picks its backend once per process from `DDE_BACKEND`, so each
backend runs `benchmarks/_deepxde_burgers.py` in its own subprocess: DeepXDE's
Burgers problem, a short Adam phase, then `model.compile("L-BFGS")` and
`model.train()` with the user's one-line swap in place (see that module). The
swapped-in object counts its calls and records what DeepXDE passed, so the
tests check that tf_extopt is what ran.

GPflow runs in this process: GPR and SVGP models on small float64 data,
optimised by `gpflow.optimizers.Scipy` and by both of our interfaces from the
same start.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import gpflow

import tf_extopt

pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_ROOT, "benchmarks", "_deepxde_burgers.py")
# DeepXDE's defaults (`dde.optimizers.set_LBFGS_options()`).
_DEFAULTS = dict(maxcor=100, ftol=0, gtol=1e-8, maxls=50)


def _deepxde(backend, runs, *flags, domain=200, adam=100):
  env = dict(os.environ, DDE_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  proc = subprocess.run(
      [sys.executable, _WORKER, "--domain", str(domain), "--adam", str(adam),
       "--runs", json.dumps(runs)] + list(flags),
      env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["backend"] == backend
  return report


# Non-default options, to see each one reach tf_extopt under TFP's name.
_TF2_OPTIONS = dict(maxiter=20, gtol=1e-9, ftol=1e-12, maxls=40)


@pytest.fixture(scope="module")
def tf2():
  return _deepxde("tensorflow", [
      {"solver": "tf_extopt", "options": _TF2_OPTIONS}], "--resume", "5")


@pytest.fixture(scope="module")
def tf2_float64():
  return _deepxde("tensorflow", [
      {"solver": "tf_extopt", "options": {"maxiter": 8}}], "--float64",
                  adam=30)


@pytest.fixture(scope="module")
def compat_v1():
  return _deepxde("tensorflow.compat.v1", [
      {"solver": "tf_extopt", "options": {"maxiter": 100}},
      {"solver": "tf_extopt", "options": dict(maxiter=7, maxcor=3, maxls=5)},
      # A gradient tolerance the Adam point already meets: no iteration.
      {"solver": "tf_extopt", "options": {"gtol": 1.0}},
      {"solver": "tf_extopt", "options": {"ftol": 0.05, "maxiter": 200}},
  ], "--inverse", "100")


# --- DeepXDE, backend `tensorflow` (tfp.optimizer.lbfgs_minimize swapped) ----


def _check_tf2_run(report, options, decrease):
  run = report["runs"][0]
  options = dict(_DEFAULTS, **options)
  maxiter = options["maxiter"]
  # One call, of the swapped function, returning tf_extopt's results.
  assert run["calls"] == 1
  (result,) = run["results"]
  assert result["module"] == "tf_extopt._results"
  assert result["iterations"] == maxiter
  assert not result["failed"]
  # DeepXDE counts our iterations as its steps.
  assert run["steps"] == maxiter
  assert result["evaluations"] >= maxiter + 1
  # DeepXDE's options, under TFP's names, reach us unchanged ...
  (kwargs,) = run["kwargs"]
  assert kwargs == dict(
      num_correction_pairs=options["maxcor"], tolerance=options["gtol"],
      x_tolerance=0, f_relative_tolerance=options["ftol"],
      max_iterations=maxiter, parallel_iterations=1,
      max_line_search_iterations=options["maxls"])
  # ... and maxcor sized the correction memory.
  assert result["memory"] == options["maxcor"]
  # A few iterations already cut the Adam loss.
  assert run["loss"] < decrease * report["adam_loss"]


def test_deepxde_tf2_runs_tf_extopt(tf2):
  assert tf2["float"] == "float32"
  _check_tf2_run(tf2, _TF2_OPTIONS, decrease=0.9)


def test_deepxde_tf2_float64(tf2_float64):
  assert tf2_float64["float"] == "float64"
  _check_tf2_run(tf2_float64, {"maxiter": 8}, decrease=0.95)


def test_deepxde_tf2_resumes_through_previous_optimizer_results(tf2):
  # DeepXDE's train_step(..., previous_optimizer_results=r): 5 + 5 resumed
  # iterations follow the same path as 10 in one call.
  resume = tf2["resume"]
  assert resume["calls"] == 3
  whole, first, second = resume["results"]
  assert not whole["resumed"] and not first["resumed"] and second["resumed"]
  assert first["iterations"] == 5
  assert whole["iterations"] == second["iterations"] == 10
  assert whole["evaluations"] == second["evaluations"]
  np.testing.assert_allclose(resume["split_loss"], resume["whole_loss"],
                             rtol=1e-5)
  assert resume["max_weight_difference"] <= 1e-5
  assert resume["split_loss"] < resume["first_loss"]


# --- DeepXDE, backend `tensorflow.compat.v1` (ScipyOptimizerInterface) -------


def _v1_result(run):
  assert run["calls"] == 1  # One tf_extopt interface built by compile.
  (result,) = run["results"]  # ... and its minimize ran once.
  # DeepXDE's loss_callback(loss_train, loss_test) advances its step once
  # per evaluation: our loss_callback gets DeepXDE's fetches every time.
  assert run["steps"] == result["evaluations"]
  return result


def _stopped_by_budget(result, maxiter):
  # DeepXDE sets maxfun = 1.25 maxiter, so either budget may end the run.
  assert 0 < result["iterations"] <= maxiter
  assert ("ITERATIONS REACHED LIMIT" in result["message"]
          or "EVALUATIONS EXCEEDS LIMIT" in result["message"]), result


def _v1_options(**overrides):
  options = dict(_DEFAULTS, maxiter=15000)
  options.update(overrides)
  options["maxfun"] = int(options["maxiter"] * 1.25)
  return {"method": "L-BFGS-B", "options": options}


def test_deepxde_compat_v1_runs_tf_extopt(compat_v1):
  # Keras 3 builds resource variables even under disable_v2_behavior().
  assert compat_v1["variable_types"] == ["ResourceVariable"]
  run = compat_v1["runs"][0]
  result = _v1_result(run)
  assert run["kwargs"] == [_v1_options(maxiter=100)]
  _stopped_by_budget(result, 100)
  assert run["loss"] < 0.7 * compat_v1["adam_loss"]


def test_deepxde_compat_v1_lbfgs_options_pass_through(compat_v1):
  limited, gtol, ftol = compat_v1["runs"][1:]
  assert limited["kwargs"] == [_v1_options(maxiter=7, maxcor=3, maxls=5)]
  _stopped_by_budget(_v1_result(limited), 7)
  assert limited["loss"] < compat_v1["adam_loss"]

  assert gtol["kwargs"] == [_v1_options(gtol=1.0)]
  result = _v1_result(gtol)
  assert result["iterations"] == 0 and result["success"]
  assert "PROJECTED GRADIENT" in result["message"]
  np.testing.assert_allclose(gtol["loss"], compat_v1["adam_loss"], rtol=1e-6)

  assert ftol["kwargs"] == [_v1_options(ftol=0.05, maxiter=200)]
  result = _v1_result(ftol)
  assert 0 < result["iterations"] < 200 and result["success"]
  assert "RELATIVE REDUCTION" in result["message"]


def test_deepxde_compat_v1_inverse_problem(compat_v1):
  # DeepXDE fetches the external variable C (a TF1 reference variable here)
  # for its loss_callback; L-BFGS recovers C = 0.5 from the data.
  inverse = compat_v1["inverse"]
  assert inverse["variable_type"] == "RefVariable"
  assert inverse["calls"] == 1
  (result,) = inverse["results"]
  assert result["iterations"] > 0
  assert inverse["loss"] < 0.1 * inverse["adam_loss"]
  assert abs(inverse["c"] - 0.5) < 0.05


# --- GPflow ------------------------------------------------------------------

_LOW, _HIGH = 0.1, 2.0


def _data(n=20, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 5.0, (n, 1))
  return x, np.sin(2.0 * x) + 0.1 * rng.standard_normal(x.shape)


def _sigmoid(low, high):
  return tfp.bijectors.Sigmoid(tf.constant(low, tf.float64),
                               tf.constant(high, tf.float64))


def _gpr(low=_LOW, high=_HIGH):
  """GPR; positive variances (softplus, shifted softplus), bounded length."""
  kernel = gpflow.kernels.SquaredExponential()
  kernel.lengthscales = gpflow.Parameter(0.5 * (low + high),
                                         transform=_sigmoid(low, high))
  model = gpflow.models.GPR(_data(), kernel=kernel, noise_variance=0.5)
  return model, model.training_loss, model.log_marginal_likelihood


def _svgp():
  """SVGP with fixed inducing points; q_sqrt is a fill-triangular transform."""
  x, y = _data()
  kernel = gpflow.kernels.SquaredExponential()
  kernel.lengthscales = gpflow.Parameter(1.0, transform=_sigmoid(_LOW, _HIGH))
  model = gpflow.models.SVGP(kernel, gpflow.likelihoods.Gaussian(),
                             np.linspace(0.0, 5.0, 5)[:, None],
                             num_data=len(x))
  gpflow.set_trainable(model.inducing_variable, False)
  return model, model.training_loss_closure((x, y)), lambda: model.elbo(
      (x, y))


def _gpr_active_bound():
  """GPR whose likelihood wants a lengthscale near 0.94, above its bound."""
  return _gpr(0.05, 0.3)


_MODELS = {"gpr": _gpr, "svgp": _svgp}
_BASELINES = dict(_MODELS, gpr_active_bound=_gpr_active_bound)
_DRIVERS = {
    "ScipyOptimizerInterface": lambda loss, variables: (
        tf_extopt.ScipyOptimizerInterface(loss, variables)),
    "LbfgsOptimizerInterface": lambda loss, variables: (
        tf_extopt.LbfgsOptimizerInterface(loss, variables,
                                          max_iterations=1000)),
}


def _optimise(make, driver):
  model, loss, objective = make()
  if driver == "gpflow":
    result = gpflow.optimizers.Scipy().minimize(loss,
                                                model.trainable_variables)
  else:
    result = _DRIVERS[driver](loss, model.trainable_variables).minimize()
  return model, result, float(objective())


@pytest.fixture(scope="module")
def gpflow_optima():
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = _optimise(_BASELINES[name], "gpflow")[2]
    return cache[name]

  return get


def _check_transforms(model, low, high):
  for p in model.parameters:
    value = p.numpy()
    assert np.isfinite(value).all(), p.name
    bijector = p.transform
    if isinstance(bijector, tfp.bijectors.Sigmoid):
      assert np.all((value >= low) & (value <= high)), p.name
    elif isinstance(bijector, tfp.bijectors.FillTriangular):
      assert np.all(np.triu(value, 1) == 0), p.name
    elif isinstance(bijector, (tfp.bijectors.Softplus, tfp.bijectors.Chain)):
      # Chain: GPflow's likelihood variance, Shift(1e-6) of a softplus.
      assert np.all(value > 0), p.name


@pytest.mark.parametrize("driver", sorted(_DRIVERS))
@pytest.mark.parametrize("name", sorted(_MODELS))
def test_gpflow_same_optimum_as_gpflow_scipy(name, driver, gpflow_optima):
  model, result, objective = _optimise(_MODELS[name], driver)
  reference = gpflow_optima(name)
  # The log marginal likelihood (GPR) or ELBO (SVGP) of the same optimum.
  assert abs(objective - reference) <= 1e-6 * abs(reference), (objective,
                                                               reference)
  # The model holds the reported optimum.
  np.testing.assert_allclose(result.fun, -objective, rtol=1e-12)
  assert result.success, result.message
  _check_transforms(model, _LOW, _HIGH)


@pytest.mark.parametrize("driver", sorted(_DRIVERS))
def test_gpflow_active_bound_is_respected(driver, gpflow_optima):
  # The sigmoid transform must hold the lengthscale in [0.05, 0.3], pressed
  # against 0.3.
  model, _, objective = _optimise(_gpr_active_bound, driver)
  _check_transforms(model, 0.05, 0.3)
  assert model.kernel.lengthscales.numpy() > 0.299
  # Not worse than gpflow's optimum (ours may sit closer to the bound).
  reference = gpflow_optima("gpr_active_bound")
  assert objective >= reference - 1e-6 * abs(reference)

