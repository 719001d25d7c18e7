"""On-device L-BFGS (`LbfgsOptimizerInterface`) vs `ScipyOptimizerInterface`.

The same Keras 3 MLPs as `scipy_interface_bench.py` (tanh, two hidden
layers, MSE, full batch; 4096 x 64 and 256 x 16), from the same initial
weights, in the same process:

* wall time for a fixed number of iterations: `ftol=gtol=0` for SciPy's
  L-BFGS-B and `tolerance=0` for ours, so both stop only at the iteration
  cap. Each driver is warmed up first (tracing), then timed `--repeats`
  times, interleaved; the median is reported. Both interfaces are
  constructed once, as a user would, so tracing is not timed.
* the loss each reaches after the iterations (the last iterate of the
  untimed run below), and after the same number of objective evaluations:
  an untimed run records (evaluations, loss) at every iterate of both, and
  the loss at the last iterate within `E` evaluations is compared, `E` being
  the smaller of the two runs' totals.

Target: on the 256 x 16 model the on-device path is at least 2x
faster per iteration than the SciPy path.

Rows: SciPy (the baseline), ours as built by default, ours with the
solver's per-trip update compiled by XLA while the model stays in the plain
graph (`compile_update=True`), and ours with `jit_compile=True` (everything
under XLA; skip with `--no-jit`).

Run: python benchmarks/keras_bench.py [--maxiter 50] [--repeats 3] [--no-jit]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import make_problem  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_extopt import LbfgsOptimizerInterface  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_extopt import ScipyOptimizerInterface  # pylint: disable=g-import-not-at-top,wrong-import-position


def make_drivers(loss_fn, model, maxiter, jit):
  drivers = {}
  scipy_opt = ScipyOptimizerInterface(
      loss_fn, model, method="L-BFGS-B",
      options={"maxiter": maxiter, "ftol": 0.0, "gtol": 0.0})
  drivers["ScipyOptimizerInterface (L-BFGS-B)"] = scipy_opt
  drivers["LbfgsOptimizerInterface"] = LbfgsOptimizerInterface(
      loss_fn, model, max_iterations=maxiter, tolerance=0.0)
  # One model is a batch of one, so the automatic rule never compiles the
  # solver's own update; this row shows what forcing it does.
  drivers["LbfgsOptimizerInterface (compile_update=True)"] = (
      LbfgsOptimizerInterface(loss_fn, model, max_iterations=maxiter,
                              tolerance=0.0, compile_update=True))
  if jit:
    drivers["LbfgsOptimizerInterface (XLA)"] = LbfgsOptimizerInterface(
        loss_fn, model, max_iterations=maxiter, tolerance=0.0,
        jit_compile=True)
  return drivers


def loss_curve(opt):
  """`[(evaluations, loss)]` at every iterate of one run."""
  curve = []

  def on_progress(progress):
    curve.append((progress.nfev, progress.fun))
  # LbfgsOptimizerInterface: one compiled call per iteration, on the same
  # path as one long run.
  opt.minimize(progress_callback=on_progress)
  return curve


def loss_at(curve, evaluations):
  within = [f for n, f in curve if n <= evaluations]
  return within[-1] if within else float("nan")


def bench(samples, width, maxiter, repeats, jit):
  model, loss_fn, tf_vars, initial = make_problem(samples, width)
  drivers = make_drivers(loss_fn, model, maxiter, jit)

  def reset():
    for v, val in zip(tf_vars, initial):
      v.assign(val)

  for opt in drivers.values():  # Warm up: traces and compiles.
    reset()
    opt.minimize()
  times = {name: [] for name in drivers}
  stats = {}
  for _ in range(repeats):
    for name, opt in drivers.items():
      reset()
      start = time.perf_counter()
      result = opt.minimize()
      times[name].append(time.perf_counter() - start)
      stats[name] = (int(result.nit), int(result.nfev))
  curves = {}
  for name, opt in drivers.items():
    reset()
    curves[name] = loss_curve(opt)
  budget = min(curve[-1][0] for curve in curves.values())
  n_params = sum(int(np.prod(v.shape)) for v in tf_vars)
  base = "ScipyOptimizerInterface (L-BFGS-B)"
  base_per_iter = statistics.median(times[base]) / stats[base][0]
  rows = []
  for name in drivers:
    nit, nfev = stats[name]
    total = statistics.median(times[name])
    rows.append((name, nit, nfev, 1e3 * total / nit, 1e3 * total / nfev,
                 base_per_iter / (total / nit), curves[name][-1][1],
                 loss_at(curves[name], budget)))
  return n_params, budget, rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--maxiter", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no-jit", action="store_true",
                      help="skip the XLA-compiled LbfgsOptimizerInterface row")
  args = parser.parse_args()
  print("%d iterations (no tolerance stop), median of %d runs; TF %s, Keras "
        "%s, SciPy %s; %d CPU cores visible\n" %
        (args.maxiter, args.repeats, tf.__version__, keras.__version__,
         scipy.__version__, os.cpu_count()))
  print("| model (samples x width, params) | driver | iterations | evals "
        "| ms/iter | ms/eval | speed-up per iter vs SciPy | loss after the "
        "iterations | loss at E evals (E) |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for samples, width in ((4096, 64), (256, 16)):
    n_params, budget, rows = bench(samples, width, args.maxiter,
                                   args.repeats, not args.no_jit)
    for name, nit, nfev, ms_it, ms_ev, speedup, final, loss in rows:
      print("| %d x %d (%d) | %s | %d | %d | %.3f | %.3f | %.2fx | %.4e "
            "| %.4e (%d) |" % (samples, width, n_params, name, nit, nfev,
                               ms_it, ms_ev, speedup, final, loss, budget))


if __name__ == "__main__":
  main()
