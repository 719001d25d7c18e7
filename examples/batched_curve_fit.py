"""1,000 noisy curves fitted in one batched `lbfgs_minimize` call.

Each curve is y = a exp(-b t) + c plus noise, with its own (a, b, c). All
curves are fitted at once: the position is a `[curves, 3]` tensor, and the
objective returns one least-squares value per curve, so every batch member
is an independent problem with its own line search and convergence test.
The same fits are then done one by one with `scipy.optimize.minimize`
(L-BFGS-B, analytic gradient) in a Python loop, for comparison.

Run: python examples/batched_curve_fit.py [--out plots] [--small] [--no-plot]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.optimize  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tf_extopt import lbfgs_minimize  # pylint: disable=g-import-not-at-top

_INITIAL = (1.0, 1.0, 0.0)


def make_curves(curves, points, seed=0):
  rng = np.random.default_rng(seed)
  t = np.linspace(0., 4., points)
  params = np.stack([rng.uniform(0.5, 2.0, curves),
                     rng.uniform(0.3, 3.0, curves),
                     rng.uniform(-0.5, 0.5, curves)], axis=1)
  y = (params[:, :1] * np.exp(-params[:, 1:2] * t) + params[:, 2:]
       + 0.02 * rng.normal(size=(curves, points)))
  return t, y, params


def model(p, t):
  """`[..., 3]` parameters, `[points]` times -> `[..., points]` values."""
  return p[..., :1] * tf.exp(-p[..., 1:2] * t) + p[..., 2:]


def fit_batched(t, y, max_iterations, jit_compile=False):
  t = tf.constant(t)
  y = tf.constant(y)

  def value_and_gradients(p):
    with tf.GradientTape() as tape:
      tape.watch(p)
      # One value per curve: the batch members are independent problems.
      loss = 0.5 * tf.reduce_sum(tf.square(model(p, t) - y), axis=-1)
    return loss, tape.gradient(loss, p)

  @tf.function(jit_compile=jit_compile)
  def solve(p0):
    return lbfgs_minimize(value_and_gradients, p0,
                          max_iterations=max_iterations, tolerance=1e-10,
                          f_relative_tolerance=1e-14)

  p0 = tf.constant(np.tile(_INITIAL, (y.shape[0], 1)))
  start = time.perf_counter()
  solve(p0).position.numpy()  # First call: traces (and compiles with XLA).
  compile_time = time.perf_counter() - start
  start = time.perf_counter()
  results = solve(p0)
  position = results.position.numpy()
  elapsed = time.perf_counter() - start
  return position, results, elapsed, compile_time


def fit_scipy_loop(t, y, max_iterations):

  def fun(p, yk):
    e = np.exp(-p[1] * t)
    r = p[0] * e + p[2] - yk
    grad = np.array([np.dot(r, e), np.dot(r, -p[0] * t * e), r.sum()])
    return 0.5 * np.dot(r, r), grad

  start = time.perf_counter()
  out = np.empty((y.shape[0], 3))
  evaluations = 0
  for k in range(y.shape[0]):
    res = scipy.optimize.minimize(fun, _INITIAL, args=(y[k],), jac=True,
                                  method="L-BFGS-B",
                                  options={"maxiter": max_iterations,
                                           "gtol": 1e-10, "ftol": 1e-14})
    out[k] = res.x
    evaluations += res.nfev
  return out, evaluations, time.perf_counter() - start


def plot(path, t, y, batched, scipy_params, true_params):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed (pip install tf_extopt[examples]); "
          "no plot written.")
    return None
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for k in range(min(4, y.shape[0])):
    axes[0].plot(t, y[k], ".", markersize=3, color="C%d" % k)
    axes[0].plot(t, model(batched[k], t).numpy(), color="C%d" % k)
  axes[0].set_title("Four of the curves and their batched fits")
  axes[0].set_xlabel("t")
  axes[1].scatter(true_params[:, 1], batched[:, 1], s=4, label="batched TF")
  axes[1].scatter(true_params[:, 1], scipy_params[:, 1], s=4, marker="x",
                  label="SciPy loop")
  axes[1].set_xlabel("true b")
  axes[1].set_ylabel("fitted b")
  axes[1].legend()
  axes[1].set_title("Decay rate: fitted vs true")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="plots")
  parser.add_argument("--small", action="store_true")
  parser.add_argument("--no-plot", action="store_true")
  parser.add_argument("--jit", action="store_true",
                      help="compile the solve with XLA (slow to compile, "
                      "faster to run)")
  args = parser.parse_args(argv)
  curves, points = (50, 30) if args.small else (1000, 50)
  max_iterations = 200

  t, y, true_params = make_curves(curves, points)
  batched, results, batched_time, compile_time = fit_batched(
      t, y, max_iterations, args.jit)
  converged = float(np.mean(results.converged.numpy()))
  print("Batched lbfgs_minimize: %d curves in %.3f s (one call, %d batched "
        "evaluations), %.1f%% converged; first call (tracing) "
        "%.1f s" % (curves, batched_time,
                    int(results.num_objective_evaluations), 100 * converged,
                    compile_time))
  scipy_params, scipy_evals, scipy_time = fit_scipy_loop(t, y,
                                                         max_iterations)
  print("SciPy L-BFGS-B loop:    %d curves in %.3f s (%d evaluations)" %
        (curves, scipy_time, scipy_evals))
  losses = lambda p: 0.5 * np.sum(
      (model(tf.constant(p), tf.constant(t)).numpy() - y) ** 2, axis=-1)
  batched_loss, scipy_loss = losses(batched), losses(scipy_params)
  agree = float(np.mean(np.abs(batched - scipy_params).max(axis=1) < 1e-3))
  print("Same minimum (params within 1e-3): %.1f%% of curves; batched loss "
        "<= SciPy loss + 1e-9 on %.1f%%" %
        (100 * agree, 100 * np.mean(batched_loss <= scipy_loss + 1e-9)))
  print("Median |fitted b - true b|: %.3f" %
        np.median(np.abs(batched[:, 1] - true_params[:, 1])))
  print("Speed-up of the batched call over the loop: %.1fx (%.1fx counting "
        "compilation)" % (scipy_time / batched_time,
                          scipy_time / (batched_time + compile_time)))
  path = None
  if not args.no_plot:
    os.makedirs(args.out, exist_ok=True)
    path = plot(os.path.join(args.out, "batched_curve_fit.png"), t, y,
                batched, scipy_params, true_params)
    if path:
      print("Plot written to", path)
  return {"converged": converged, "agree": agree,
          "batched_loss": batched_loss, "scipy_loss": scipy_loss,
          "batched_time": batched_time, "scipy_time": scipy_time,
          "compile_time": compile_time,
          "plot": path}


if __name__ == "__main__":
  main()
