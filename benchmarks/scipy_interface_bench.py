"""Per-evaluation cost of ScipyOptimizerInterface vs the floor and gpflow.

Full-batch L-BFGS-B on a Keras 3 MLP (tanh, two hidden layers, MSE), on two
problem sizes. Three drivers run a fixed number of iterations from the same
initial weights in the same process:

* floor: one `tf.function(input_signature=[f64[n]])` that assigns the packed
  point, computes loss and flat gradient and returns them as float64; its
  concrete function is called straight from `scipy.optimize.minimize` (two
  `.numpy()` calls, no other Python work);
* gpflow: `gpflow.optimizers.Scipy().minimize` (compile=True), given the
  Keras 3 variables unwrapped to `tf.Variable`s by hand (it rejects
  `keras.Variable`);
* ours: `ScipyOptimizerInterface(loss_fn, model).minimize()`.

`ftol=gtol=0` stops every driver only at `maxiter`, so they do (nearly) the
same evaluations; ms/eval divides wall time by each run's own evaluation
count. Each driver is warmed up first (tracing), then timed `--repeats`
times in interleaved, rotated order. ms/eval is the median over runs; the
ratio is the median over rounds of each driver's ms/eval over the floor's in
the same round (paired, so load drifting on a shared machine cancels).

Both problems run twice: as plain `tf.function`s, then with XLA
(`jit_compile=True` for the floor and ours, `tf_fun_args` for gpflow); each
group's ratio is to its own floor.

Run: python benchmarks/scipy_interface_bench.py [--maxiter 50] [--repeats 5]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.optimize  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import make_problem  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_extopt import ScipyOptimizerInterface  # pylint: disable=g-import-not-at-top,wrong-import-position

try:
  import gpflow  # pylint: disable=g-import-not-at-top
except ImportError:  # The bench extra installs it; still run without it.
  gpflow = None

def make_floor(loss_fn, tf_vars, jit_compile=False):
  shapes = [v.shape for v in tf_vars]
  sizes = [int(np.prod(s)) for s in shapes]

  @tf.function(input_signature=[tf.TensorSpec([sum(sizes)], tf.float64)],
               jit_compile=jit_compile)
  def value_and_grad(x):
    for v, p, s in zip(tf_vars, tf.split(x, sizes), shapes):
      v.assign(tf.cast(tf.reshape(p, s), v.dtype))
    with tf.GradientTape() as tape:
      loss = loss_fn()
    grads = tape.gradient(loss, tf_vars)
    flat = tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads],
                     0)
    return tf.cast(loss, tf.float64), flat

  # The concrete function skips tf.function's argument dispatch, so the floor
  # is as cheap as a hand-written bridge can be.
  concrete = value_and_grad.get_concrete_function()

  def fun(x):
    loss, grad = concrete(tf.constant(x))
    return loss.numpy(), grad.numpy()

  def run(options):
    x0 = np.concatenate([v.numpy().ravel() for v in tf_vars]).astype(np.float64)
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                  options=options)
    return res.nfev
  return run


def make_gpflow(loss_fn, tf_vars, jit_compile=False):
  opt = gpflow.optimizers.Scipy()
  tf_fun_args = {"jit_compile": True} if jit_compile else {}

  def run(options):
    res = opt.minimize(loss_fn, tf_vars, method="L-BFGS-B", options=options,
                       tf_fun_args=tf_fun_args)
    return res.nfev
  return run


def make_ours(loss_fn, model, options, jit_compile=False):
  opt = ScipyOptimizerInterface(loss_fn, model, method="L-BFGS-B",
                                options=options, jit_compile=jit_compile)

  def run(unused_options):
    return opt.minimize().nfev
  return run


def bench(samples, width, maxiter, repeats, jit_compile):
  """Returns the parameter count and rows.

  Each row is (driver, evals, median ms/eval, ratio to the floor). The
  ratio is the median over rounds of the driver's ms/eval divided by the
  floor's in the same round: on a machine shared with other jobs the load
  drifts, and adjacent runs see nearly the same load.
  """
  model, loss_fn, tf_vars, initial = make_problem(samples, width)
  options = {"maxiter": maxiter, "ftol": 0.0, "gtol": 0.0}
  drivers = {"floor": make_floor(loss_fn, tf_vars, jit_compile)}
  if gpflow is not None:
    drivers["gpflow.optimizers.Scipy"] = make_gpflow(loss_fn, tf_vars,
                                                     jit_compile)
  drivers["ScipyOptimizerInterface"] = make_ours(loss_fn, model, options,
                                                 jit_compile)

  def reset():
    for v, val in zip(tf_vars, initial):
      v.assign(val)

  for run in drivers.values():  # Warm up: traces and compiles.
    reset()
    run({"maxiter": 3})
  times = {name: [] for name in drivers}
  evals = {name: [] for name in drivers}
  names = list(drivers)
  for r in range(repeats):
    # Interleaved, and rotated so no driver always runs right after another.
    for name in names[r % len(names):] + names[:r % len(names)]:
      run = drivers[name]
      reset()
      start = time.perf_counter()
      nfev = run(options)
      elapsed = time.perf_counter() - start
      times[name].append(elapsed / nfev)
      evals[name].append(nfev)
  n_params = sum(int(np.prod(v.shape)) for v in tf_vars)
  rows = []
  for name in drivers:
    ratios = [t / f for t, f in zip(times[name], times["floor"])]
    rows.append((name, int(statistics.median(evals[name])),
                 statistics.median(times[name]) * 1e3,
                 statistics.median(ratios)))
  return n_params, rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--maxiter", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument(
      "--threads", type=int, default=0,
      help="TF intra/inter-op threads (0: TF's default). 1 steadies the "
      "numbers on a machine shared with other jobs.")
  args = parser.parse_args()
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  print("L-BFGS-B, %d iterations (ftol=gtol=0), %d interleaved rounds; "
        "TF %s, Keras %s, SciPy %s%s; TF threads: %s; load average at "
        "start %.2f\n" %
        (args.maxiter, args.repeats, tf.__version__, keras.__version__,
         scipy.__version__,
         ", gpflow %s" % gpflow.__version__ if gpflow else ", no gpflow",
         args.threads or "default", os.getloadavg()[0]))
  print("| problem (samples x width, params) | XLA | driver | evals "
        "| ms/eval | x floor |")
  print("|---|---|---|---:|---:|---:|")
  for jit_compile in (False, True):
    for samples, width in ((4096, 64), (256, 16)):
      n_params, rows = bench(samples, width, args.maxiter, args.repeats,
                             jit_compile)
      for name, nfev, ms, ratio in rows:
        print("| %d x %d (%d) | %s | %s | %d | %.3f | %.2f |" %
              (samples, width, n_params, "yes" if jit_compile else "no",
               name, nfev, ms, ratio), flush=True)


if __name__ == "__main__":
  main()
