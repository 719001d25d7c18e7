"""Eager calls against calls inside `tf.function`, for tf_extopt and TFP.

    python benchmarks/eager_bench.py [--iterations 200] [--slow-iterations 30]
                                     [--rounds 3]

The objective is a PINN-sized model: an MLP 2 -> 20 -> 20 -> 20 -> 1 with
tanh, fitted by mean squared error to 2540 points, float32, its value and
gradient one `tf.function` of the flat parameter vector (921 variables), as
DeepXDE's TF2 backend and most tutorials write it. Every solver runs a fixed
number of iterations (`tolerance=0`), from the same start.

Rows:

* tf_extopt called eagerly (the loop is traced into a cached `tf.function`
  on the first call) and inside the caller's `tf.function`;
* tf_extopt's loop op by op (what an eager call did before: the private
  `_eager.disabled()` switch), and TFP's eager and `tf.function` calls.

The op-by-op loops take `--slow-iterations` iterations (they cost tens of
milliseconds per iteration). Each row is warmed up first (the first call's
time is reported separately: for the eager call, tracing the loop), then
`--rounds` rounds time each row in turn, so a busy spell slows every row of
that round; times are medians, the eager / tf.function ratio is the median of
the per-round ratios. Prints a Markdown table. Nothing is asserted.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top

import tf_extopt  # pylint: disable=g-import-not-at-top
from tf_extopt._solver import _eager  # pylint: disable=g-import-not-at-top

LAYERS = (2, 20, 20, 20, 1)
NUM_POINTS = 2540


def pinn_objective():
  """`(value_and_gradients, start)`: an MLP's MSE on 2540 points, float32."""
  rng = np.random.RandomState(0)
  points = np.stack([rng.uniform(-1.0, 1.0, NUM_POINTS),
                     rng.uniform(0.0, 1.0, NUM_POINTS)], axis=-1)
  target = np.sin(np.pi * points[:, :1]) * np.exp(-points[:, 1:])
  points = tf.constant(points, tf.float32)
  target = tf.constant(target, tf.float32)
  shapes = []
  for fan_in, fan_out in zip(LAYERS[:-1], LAYERS[1:]):
    shapes += [(fan_in, fan_out), (fan_out,)]
  sizes = [int(np.prod(shape)) for shape in shapes]
  start = np.concatenate([
      rng.randn(size) * (np.sqrt(1.0 / shape[0]) if len(shape) == 2 else 0.0)
      for size, shape in zip(sizes, shapes)]).astype(np.float32)

  def loss(flat):
    parts = tf.split(flat, sizes)
    h = points
    for i in range(0, len(parts), 2):
      h = tf.matmul(h, tf.reshape(parts[i], shapes[i])) + parts[i + 1]
      if i + 2 < len(parts):
        h = tf.tanh(h)
    return tf.reduce_mean((h - target) ** 2)

  @tf.function
  def value_and_gradients(flat):
    with tf.GradientTape() as tape:
      tape.watch(flat)
      value = loss(flat)
    return value, tape.gradient(value, flat)

  return value_and_gradients, tf.constant(start)


def options(iterations):
  return dict(tolerance=0.0, max_iterations=iterations)


def rows(iterations, slow_iterations):
  """name -> (call, iterations), each call returning the solver's results."""
  function, start = pinn_objective()

  def ours(x, iterations=iterations):
    return tf_extopt.lbfgs_minimize(function, x, **options(iterations))

  def theirs(x, iterations=iterations):
    return tfp.optimizer.lbfgs_minimize(function, x, **options(iterations))

  def ours_op_by_op(x):
    with _eager.disabled():
      return ours(x, slow_iterations)

  return start, {
      ("tf_extopt", "eager call"): ours,
      ("tf_extopt", "inside tf.function"): tf.function(ours),
      ("tf_extopt", "op by op (before)"): ours_op_by_op,
      ("TFP", "eager call"): lambda x: theirs(x, slow_iterations),
      ("TFP", "inside tf.function"): tf.function(theirs),
  }


def timed(call, start):
  began = time.perf_counter()
  results = call(start)
  results.objective_value.numpy()  # Waits for the result.
  return time.perf_counter() - began, results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, default=200)
  parser.add_argument("--slow-iterations", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  start, calls = rows(args.iterations, args.slow_iterations)

  first_call, results = {}, {}
  for key, call in calls.items():
    first_call[key], results[key] = timed(call, start)
  per_iteration = {key: [] for key in calls}
  for _ in range(args.rounds):
    for key, call in calls.items():
      seconds, results[key] = timed(call, start)
      per_iteration[key].append(
          1e3 * seconds / max(int(results[key].num_iterations), 1))

  print(f"## Eager calls: {args.iterations} L-BFGS iterations of an MLP "
        f"{' -> '.join(map(str, LAYERS))} (tanh, {NUM_POINTS} points, "
        "float32, objective a tf.function)\n")
  print("| solver | call | ms / iteration | vs inside tf.function | "
        "iterations | evaluations | first call (s) |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for key in calls:
    solver = key[0]
    reference = per_iteration[(solver, "inside tf.function")]
    ratio = np.median(np.array(per_iteration[key]) / np.array(reference))
    print(f"| {solver} | {key[1]} | {np.median(per_iteration[key]):.2f} | "
          f"{ratio:.2f}x | {int(results[key].num_iterations)} | "
          f"{int(results[key].num_objective_evaluations)} | "
          f"{first_call[key]:.2f} |")
  ours_eager = np.median(per_iteration[("tf_extopt", "eager call")])
  ours_first = first_call[("tf_extopt", "eager call")]
  print(f"\nThe eager call's first call traces the loop: {ours_first:.2f} s, "
        f"of which about {ours_first - ours_eager * args.iterations / 1e3:.2f}"
        " s is tracing (first call minus a warm call). Ratios are medians "
        f"of {args.rounds} per-round ratios; times are medians.\n")


if __name__ == "__main__":
  main()
