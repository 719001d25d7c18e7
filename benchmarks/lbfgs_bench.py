"""Benchmark: tf_extopt.lbfgs_minimize against TFP and SciPy, in one process.

Part 1 solves the standard problems of `tf_extopt.test_problems` with all
three solvers at the same gradient tolerance and reports objective
evaluations and success. Part 2 solves a family of random quadratics at
TFP's defaults (`max_iterations=50`, `tolerance=1e-8` as TFP's tests pass
it), the setting of a user who swaps TFP's solver for ours: converged counts,
iterations and evaluations per family. Part 3 times a batch of 1000
Rosenbrock-10 problems, and one of 1000 L2-regularised logistic regressions
(512 x 10 each, an objective that costs something), in graph mode
(`tf.function`) and under XLA
(`jit_compile=True`); every compiled function is called once to trace and
compile before timing.

Run: python benchmarks/lbfgs_bench.py [--parts problems,quadratics,timing]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.optimize
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tf_extopt
from tf_extopt import test_problems

TOLERANCE = 1e-6


def solved(value, gradient, problem, reference_value):
  """Success: gradient below tolerance and the reference minimum reached."""
  target = (problem.minimum_value if problem.minimum_value is not None
            else reference_value)
  return bool(np.max(np.abs(gradient)) <= TOLERANCE * 10
              and abs(value - target) <= 1e-6 * (1 + abs(target)))


def standard_problems():
  rows = []
  for problem in test_problems.PROBLEMS:
    function = test_problems.value_and_gradients(problem.objective)
    start = tf.constant(problem.start)
    ours = tf.function(lambda x, f=function: tf_extopt.lbfgs_minimize(
        f, x, tolerance=TOLERANCE, max_iterations=1000))(start)
    theirs = tf.function(lambda x, f=function: tfp.optimizer.lbfgs_minimize(
        f, x, tolerance=TOLERANCE, max_iterations=1000))(start)
    reference = scipy.optimize.minimize(
        test_problems.numpy_function(problem.objective), problem.start,
        jac=True, method="L-BFGS-B",
        options={"gtol": TOLERANCE, "ftol": 0, "maxiter": 1000})
    rows.append({
        "name": problem.name,
        "n": problem.start.size,
        "ours": int(ours.num_objective_evaluations),
        "scipy": int(reference.nfev),
        "tfp": int(theirs.num_objective_evaluations),
        "ours_ok": solved(float(ours.objective_value),
                          ours.objective_gradient.numpy(), problem,
                          reference.fun),
        "scipy_ok": solved(reference.fun, reference.jac, problem,
                           reference.fun),
        "tfp_ok": solved(float(theirs.objective_value),
                         theirs.objective_gradient.numpy(), problem,
                         reference.fun),
    })
  return rows


def print_problem_table(rows):
  mark = {True: "yes", False: "NO"}
  print(f"### Objective evaluations to gradient sup-norm <= {TOLERANCE:g}\n")
  print("| problem | n | tf_extopt | SciPy L-BFGS-B | TFP | ours/SciPy "
        "| ours/TFP | solved (ours/SciPy/TFP) |")
  print("|---|---:|---:|---:|---:|---:|---:|---|")
  for r in rows:
    print(f"| {r['name']} | {r['n']} | {r['ours']} | {r['scipy']} | "
          f"{r['tfp']} | {r['ours'] / r['scipy']:.2f} | "
          f"{r['ours'] / r['tfp']:.2f} | {mark[r['ours_ok']]}/"
          f"{mark[r['scipy_ok']]}/{mark[r['tfp_ok']]} |")
  med = lambda key: statistics.median(r[key] for r in rows)
  print(f"| **median** | | **{med('ours'):g}** | **{med('scipy'):g}** | "
        f"**{med('tfp'):g}** | "
        f"**{statistics.median(r['ours'] / r['scipy'] for r in rows):.2f}** | "
        f"**{statistics.median(r['ours'] / r['tfp'] for r in rows):.2f}** | "
        f"{sum(r['ours_ok'] for r in rows)}/{len(rows)} solved by tf_extopt |")
  print()


QUADRATIC_TOLERANCE = 1e-8
QUADRATIC_FAMILIES = ("sphere-100", "diagonal, scales exp(N(0,1))",
                      "diagonal, scales exp(N(0,2))", "rotated-50")


def quadratic_problem(family, seed):
  """`(hessian, minimum)` of `f(x) = (x - m)^T H (x - m) / 2`; start at ones.

  The unit sphere is TFP's `sum (x - m)^2`; diagonal bowls are TFP's
  `sum s_i (x_i - m_i)^2` with `n` drawn from 20..100; the rotated bowls are
  TFP's skewed 50-D quadratic with eigenvalues `exp(N(0, 1))`.
  """
  rng = np.random.RandomState(1000 * QUADRATIC_FAMILIES.index(family) + seed)
  if family == "sphere-100":
    return 2.0 * np.eye(100), rng.randn(100)
  if family == "rotated-50":
    rotation = scipy.stats.special_ortho_group.rvs(50, random_state=rng)
    eigenvalues = np.exp(rng.randn(50))
    return rotation.T @ np.diag(eigenvalues) @ rotation, rng.randn(50)
  n = rng.randint(20, 101)
  sigma = 1.0 if "N(0,1)" in family else 2.0
  return 2.0 * np.diag(np.exp(sigma * rng.randn(n))), rng.randn(n)


def _quadratic_value_and_gradient(x, hessian, minimum):
  offset = x - minimum
  gradient = tf.linalg.matvec(hessian, offset)
  return 0.5 * tf.reduce_sum(offset * gradient, axis=-1), gradient


def quadratic_family(seeds):
  """Per-family results of the three solvers on `seeds` quadratics each.

  Each solver is traced once, with the problem's data as arguments of
  unknown size, so the whole family costs two traces.
  """
  spec = [tf.TensorSpec([None], tf.float64),
          tf.TensorSpec([None, None], tf.float64),
          tf.TensorSpec([None], tf.float64)]

  def traced(solver):
    return tf.function(
        lambda x, h, m: solver(
            lambda y: _quadratic_value_and_gradient(y, h, m), x,
            tolerance=QUADRATIC_TOLERANCE),
        input_signature=spec)

  ours = traced(tf_extopt.lbfgs_minimize)
  theirs = traced(tfp.optimizer.lbfgs_minimize)
  rows = []
  for family in QUADRATIC_FAMILIES:
    runs = []
    for seed in range(seeds):
      hessian, minimum = quadratic_problem(family, seed)
      start = np.ones_like(minimum)
      args = (tf.constant(start), tf.constant(hessian), tf.constant(minimum))
      a, b = ours(*args), theirs(*args)
      reference = scipy.optimize.minimize(
          lambda x, h=hessian, m=minimum: (0.5 * (x - m) @ h @ (x - m),
                                           h @ (x - m)),
          start, jac=True, method="L-BFGS-B",
          options={"gtol": QUADRATIC_TOLERANCE, "ftol": 0, "maxiter": 1000})
      runs.append({
          "ours_ok": bool(a.converged), "tfp_ok": bool(b.converged),
          "ours_it": int(a.num_iterations), "tfp_it": int(b.num_iterations),
          "ours_ev": int(a.num_objective_evaluations),
          "tfp_ev": int(b.num_objective_evaluations),
          "scipy_ev": int(reference.nfev),
          "scipy_ok": bool(np.max(np.abs(reference.jac))
                           <= QUADRATIC_TOLERANCE)})
    rows.append((family, runs))
  return rows


def print_quadratic_table(rows, seeds):
  print(f"### Random quadratics at TFP's defaults (max_iterations=50, "
        f"tolerance={QUADRATIC_TOLERANCE:g}), {seeds} seeds per family\n")
  print("SciPy runs to the same gradient tolerance without the iteration "
        "cap. Iterations and evaluations are medians over the seeds.\n")
  print("| family | converged (ours/TFP) | iterations (ours/TFP) "
        "| evaluations (ours/SciPy/TFP) | ours/SciPy | converged where TFP "
        "did |")
  print("|---|---:|---:|---:|---:|---:|")
  med = lambda runs, key: statistics.median(r[key] for r in runs)
  everything = []
  for family, runs in rows + [("**all**", None)]:
    runs = runs or everything
    both = sum(r["ours_ok"] for r in runs if r["tfp_ok"])
    print(f"| {family} | {sum(r['ours_ok'] for r in runs)}/"
          f"{sum(r['tfp_ok'] for r in runs)} of {len(runs)} | "
          f"{med(runs, 'ours_it'):g}/{med(runs, 'tfp_it'):g} | "
          f"{med(runs, 'ours_ev'):g}/{med(runs, 'scipy_ev'):g}/"
          f"{med(runs, 'tfp_ev'):g} | "
          f"{statistics.median(r['ours_ev'] / r['scipy_ev'] for r in runs):.2f}"
          f" | {both}/{sum(r['tfp_ok'] for r in runs)} |")
    if family != "**all**":
      everything += runs
  print()


def timed_pair(functions, argument, repeats):
  """Wall and process-CPU seconds of each function, measured in turns.

  Each function is called once first (trace and compile). Then the functions
  are called in alternation `repeats` times, so a busy spell on the shared
  host slows both rather than one. Returns, per function, the median wall
  and CPU seconds and the last results, plus the medians of the per-round
  ratios `first / other` (wall, CPU).
  """
  results = [function(argument) for function in functions]
  walls = [[] for _ in functions]
  cpus = [[] for _ in functions]
  for _ in range(repeats):
    for i, function in enumerate(functions):
      wall, cpu = time.perf_counter(), time.process_time()
      results[i] = function(argument)
      results[i].position.numpy()
      walls[i].append(time.perf_counter() - wall)
      cpus[i].append(time.process_time() - cpu)
  ratios = [(statistics.median(a / b for a, b in zip(walls[0], walls[i])),
             statistics.median(a / b for a, b in zip(cpus[0], cpus[i])))
            for i in range(len(functions))]
  return [(statistics.median(w), statistics.median(c), r, ratio)
          for w, c, r, ratio in zip(walls, cpus, results, ratios)]


def batched_rosenbrock(batch_size, repeats):
  rosenbrock = test_problems.value_and_gradients(test_problems._rosenbrock)
  starts = tf.constant(np.random.RandomState(0).uniform(
      -2.0, 2.0, (batch_size, 10)))
  batch_table(f"A batch of {batch_size} Rosenbrock-10 problems", rosenbrock,
              starts, repeats)


def batched_logistic(batch_size, repeats, samples=512, features=10):
  """L2-regularised logistic regressions, each with its own data set."""
  rng = np.random.RandomState(0)
  data = rng.randn(batch_size, samples, features)
  truth = rng.randn(batch_size, features)
  labels = (rng.uniform(size=(batch_size, samples))
            < 1.0 / (1.0 + np.exp(-np.einsum("bsf,bf->bs", data, truth))))
  data = tf.constant(data)
  labels = tf.constant(labels.astype(np.float64))

  def value_and_gradients(w):
    with tf.GradientTape() as tape:
      tape.watch(w)
      logits = tf.einsum("bsf,bf->bs", data, w)
      value = (tf.reduce_mean(tf.nn.softplus(logits) - labels * logits, -1)
               + 0.5e-2 * tf.reduce_sum(w * w, axis=-1))
    return value, tape.gradient(value, w)

  batch_table(f"A batch of {batch_size} L2-regularised logistic "
              f"regressions ({samples} x {features} each)",
              value_and_gradients, tf.zeros([batch_size, features],
                                            tf.float64), repeats)


def batch_table(title, function, starts, repeats):
  """Times TFP and tf_extopt on one batch, graph mode and XLA; prints a table."""
  print(f"### {title} (tolerance {TOLERANCE:g}; {repeats} timed rounds after "
        "one compiling call, the two solvers alternating; times are medians, "
        "speed-ups are medians of the per-round ratios)\n")
  print("| mode | solver | wall time | CPU time | TFP / tf_extopt (wall, CPU) "
        "| batched evaluations | converged |")
  print("|---|---|---:|---:|---:|---:|---:|")
  batch_size = starts.shape[0]
  for mode, jit in (("graph (tf.function)", False),
                    ("XLA (jit_compile=True)", True)):
    labels = ("TFP", "tf_extopt")
    compiled = [
        tf.function(lambda x, s=solver: s(function, x, tolerance=TOLERANCE,
                                          max_iterations=1000),
                    jit_compile=jit)
        for solver in (tfp.optimizer.lbfgs_minimize,
                       tf_extopt.lbfgs_minimize)]
    measured = timed_pair(compiled, starts, repeats)
    for label, (wall, cpu, results, ratio) in zip(labels, measured):
      print(f"| {mode} | {label} | {wall * 1e3:.0f} ms | {cpu * 1e3:.0f} ms | "
            f"{ratio[0]:.2f}x, {ratio[1]:.2f}x | "
            f"{int(results.num_objective_evaluations)} | "
            f"{int(np.sum(results.converged.numpy()))}/{batch_size} |")
  print()


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch-size", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--seeds", type=int, default=10,
                      help="quadratics per family in part 2")
  parser.add_argument("--parts", default="problems,quadratics,timing",
                      help="comma-separated subset of the three parts")
  args = parser.parse_args()
  parts = args.parts.split(",")
  print(f"TensorFlow {tf.__version__}, TFP {tfp.__version__}, "
        f"SciPy {scipy.__version__}\n")
  if "problems" in parts:
    print_problem_table(standard_problems())
  if "quadratics" in parts:
    print_quadratic_table(quadratic_family(args.seeds), args.seeds)
  if "timing" in parts:
    batched_rosenbrock(args.batch_size, args.repeats)
    batched_logistic(args.batch_size, args.repeats)


if __name__ == "__main__":
  main()
