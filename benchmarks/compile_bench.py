"""What the first call costs: tracing, and XLA compilation, against TFP.

Every `tf.function` pays once for tracing the solver's loop into a graph, and
under `jit_compile=True` also for XLA's compilation; users who call a solver
once per process (scripts, DeepXDE, notebooks) pay it on every run. This
times, for a batch of 10 Rosenbrock problems (float64), a fresh
`tf.function` per round:

* first call: trace (+ compile) + run; warm call: run only; the difference
  is the one-off cost;
* TFP's `lbfgs_minimize` is the baseline, in the same process and mode;
  `lbfgsb_minimize` (which TFP lacks) runs with a box on the same problems,
  at n = 4 (explicit n x n matrix) and n = 30 (compact representation).

Rounds rotate the solvers' order; one-off costs are medians over rounds and
ratios are medians of the per-round ratios to TFP's one-off cost in the
same round and mode. Every solver runs once before timing (imports, TF's
runtime). Run: python benchmarks/compile_bench.py [--rounds 3]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top

import tf_extopt  # pylint: disable=g-import-not-at-top
from tf_extopt import test_problems  # pylint: disable=g-import-not-at-top

BATCH = 10


def rosenbrock(x):
  return test_problems.value_and_gradients(
      lambda z: tf.reduce_sum(100. * (z[..., 1:] - z[..., :-1] ** 2) ** 2
                              + (1. - z[..., :-1]) ** 2, axis=-1))(x)


def solvers():
  """(label, n, solve(x) -> results) rows; TFP's first per dimension."""
  rows = []
  for n in (4, 30):
    box = dict(lower_bounds=np.full(n, -0.5), upper_bounds=np.full(n, 2.0))
    rows += [
        ("TFP lbfgs_minimize", n, lambda x: tfp.optimizer.lbfgs_minimize(
            rosenbrock, x, tolerance=1e-8)),
        ("tf_extopt lbfgs_minimize", n, lambda x: tf_extopt.lbfgs_minimize(
            rosenbrock, x, tolerance=1e-8)),
        ("tf_extopt lbfgsb_minimize (box)", n,
         lambda x, box=box: tf_extopt.lbfgsb_minimize(
             rosenbrock, x, tolerance=1e-8, **box)),
    ]
  return rows


def time_once(solve, x0, jit_compile):
  fn = tf.function(solve, jit_compile=jit_compile)
  start = time.perf_counter()
  fn(x0).position.numpy()
  first = time.perf_counter() - start
  start = time.perf_counter()
  results = fn(x0)
  results.position.numpy()
  warm = time.perf_counter() - start
  return first - warm, warm, int(results.num_objective_evaluations)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  rows = solvers()
  starts = {n: tf.constant(np.random.RandomState(n).uniform(-1, 1, (BATCH, n)))
            for n in (4, 30)}
  for _, n, solve in rows:  # Warm-up: imports and TF's runtime.
    solve(starts[n])

  print(f"| mode | problem | solver | one-off cost (s) | vs TFP | warm call "
        f"(ms) | evaluations |")
  print("|---|---|---|---:|---:|---:|---:|")
  for jit_compile in (False, True):
    mode = "XLA (jit_compile=True)" if jit_compile else "tf.function"
    samples = {i: [] for i in range(len(rows))}
    for r in range(args.rounds):
      order = list(range(len(rows)))
      order = order[r % len(order):] + order[:r % len(order)]
      for i in order:
        samples[i].append(time_once(rows[i][2], starts[rows[i][1]],
                                    jit_compile))
    for i, (label, n, _) in enumerate(rows):
      baseline = next(j for j, row in enumerate(rows)
                      if row[1] == n and row[0].startswith("TFP"))
      one_off = statistics.median(s[0] for s in samples[i])
      ratio = statistics.median(
          s[0] / b[0] for s, b in zip(samples[i], samples[baseline]))
      warm = statistics.median(s[1] for s in samples[i])
      evals = samples[i][-1][2]
      print(f"| {mode} | Rosenbrock n={n}, batch {BATCH} | {label} | "
            f"{one_off:.2f} | {ratio:.2f}x | {warm * 1e3:.1f} | {evals} |",
            flush=True)


if __name__ == "__main__":
  main()
