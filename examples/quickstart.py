"""Quickstart: tf_extopt.lbfgs_minimize on TFP's 60-D bowl and a Rosenbrock batch.

Runs the example from TFP's `lbfgs_minimize` documentation unchanged except
for the import, then solves a batch of independent Rosenbrock problems in one
compiled call, and prints a small table with SciPy's L-BFGS-B beside it.

    python examples/quickstart.py [--batch-size 100] [--out DIR]

With `--out`, it also writes `quickstart.png` (needs matplotlib, the
`examples` extra): each batch member's objective at the start and at the end.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.optimize
import tensorflow as tf

import tf_extopt


def quadratic_bowl():
  """TFP's documented example, with `tf_extopt` in place of `tfp.optimizer`."""
  ndims = 60
  minimum = np.ones([ndims], dtype="float64")
  scales = np.arange(ndims, dtype="float64") + 1.0

  def quadratic(x):
    value = tf.reduce_sum(scales * (x - minimum) ** 2, axis=-1)
    return value, 2.0 * scales * (x - minimum)

  start = np.arange(ndims, 0, -1, dtype="float64")
  # TFP's example uses the default max_iterations=50; this line search needs
  # fewer evaluations but more iterations on ill-conditioned quadratics.
  results = tf_extopt.lbfgs_minimize(
      quadratic, initial_position=tf.constant(start), tolerance=1e-8,
      max_iterations=100)
  assert results.converged
  np.testing.assert_allclose(results.position, minimum, atol=1e-6)
  reference = scipy.optimize.minimize(
      lambda x: tuple(t.numpy() for t in quadratic(tf.constant(x))), start,
      jac=True, method="L-BFGS-B",
      options={"gtol": 1e-8, "ftol": 0, "maxiter": 1000})
  return results, reference


def rosenbrock(x):
  """Rosenbrock's function on `[..., n]` and its gradient."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    value = tf.reduce_sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2
                          + (1.0 - x[..., :-1]) ** 2, axis=-1)
  return value, tape.gradient(value, x)


def rosenbrock_batch(batch_size, dim=10):
  starts = np.random.RandomState(0).uniform(-2.0, 2.0, (batch_size, dim))
  solve = tf.function(lambda x: tf_extopt.lbfgs_minimize(
      rosenbrock, x, tolerance=1e-6, max_iterations=1000), jit_compile=True)
  results = solve(tf.constant(starts))
  scipy_evaluations = [
      scipy.optimize.minimize(
          lambda x: tuple(t.numpy() for t in rosenbrock(tf.constant(x))), s,
          jac=True, method="L-BFGS-B",
          options={"gtol": 1e-6, "ftol": 0, "maxiter": 1000}).nfev
      for s in starts[:5]]
  return starts, results, scipy_evaluations


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-size", type=int, default=100)
  parser.add_argument("--out", default=None,
                      help="folder for quickstart.png (needs matplotlib)")
  args = parser.parse_args()

  bowl, bowl_scipy = quadratic_bowl()
  starts, batch, scipy_evaluations = rosenbrock_batch(args.batch_size)
  converged = batch.converged.numpy()
  # Rosenbrock-10 has a second local minimum near x_1 = -1, which some random
  # starts reach legitimately (SciPy reaches it from the same starts).
  at_global = np.max(np.abs(batch.position.numpy() - 1.0), axis=-1) < 1e-4

  print("| problem | converged | iterations | evaluations | SciPy "
        "evaluations | result |")
  print("|---|---|---:|---:|---:|---:|")
  print(f"| TFP's 60-D quadratic bowl | {bool(bowl.converged)} | "
        f"{int(bowl.num_iterations)} | {int(bowl.num_objective_evaluations)} "
        f"| {bowl_scipy.nfev} | max error "
        f"{np.max(np.abs(bowl.position.numpy() - 1.0)):.1e} |")
  print(f"| {args.batch_size} Rosenbrock-10 problems, one XLA call | "
        f"{int(converged.sum())}/{args.batch_size} | "
        f"{int(batch.num_iterations)} (max) | "
        f"{int(batch.num_objective_evaluations)} (batched calls) | "
        f"{int(np.median(scipy_evaluations))} (median of 5, one at a time) | "
        f"{int(at_global.sum())} at (1, ..., 1), the rest at the local "
        "minimum near x_1 = -1 |")

  if args.out:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    os.makedirs(args.out, exist_ok=True)
    start_values = rosenbrock(tf.constant(starts))[0].numpy()
    final_values = batch.objective_value.numpy()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(np.sort(start_values)[::-1], label="start")
    ax.semilogy(np.sort(np.maximum(final_values, 1e-30))[::-1],
                label="after lbfgs_minimize")
    ax.set_xlabel("batch member (sorted)")
    ax.set_ylabel("Rosenbrock value")
    ax.set_title(f"{args.batch_size} Rosenbrock-10 problems, one call")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "quickstart.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
