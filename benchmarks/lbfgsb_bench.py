"""`tf_extopt.lbfgsb_minimize` side by side with SciPy's L-BFGS-B.

    python benchmarks/lbfgsb_bench.py [--batch 1000] [--dims 4,30,100]
                                      [--skip-single] [--rounds 3]
                                      [--profile]

Part 1: bounded versions of the package's classic problems (each problem's
box is placed so that some bounds are active at the solution), plus bounded
Rosenbrock, random convex QPs and a QP with every variable at a bound. Each
runs alone (a batch of one) so evaluation counts are per problem, with the
same stopping rules as SciPy's defaults (`pgtol=1e-5`, `ftol=2.2e-9`,
`maxls=20`). "solved" means: converged, not failed, and an objective within
1e-6 (relative to max(1, |f|)) of SciPy's or lower.

Part 2: batches of bounded n-D Rosenbrock problems (n = 4, 30, 100 by
default, each member with its own random box and start) solved on device in
one XLA-compiled call and in one `tf.function` call (each warmed up first, so
compilation is excluded) against a Python loop calling SciPy on each, with
NumPy objectives for SciPy; three rounds (`--rounds`) with the solvers in
turns. n = 4 takes the explicit n x n matrix, n = 30 and 100 the compact
representation (n > 2m).

Part 3 (`--profile`, instead of parts 1 and 2): where one loop trip of the
compact path goes. The pieces of a bounded direction (compact form,
generalized Cauchy point, subspace step) and, for scale, the unconstrained
two-loop recursion, each alone in a `tf.function` with and without XLA, for
`--batch` members holding m = 10 random pairs, a fifth of the variables at
a bound; warm, median over repeats.

Prints markdown tables. Not a test: nothing is asserted.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.optimize  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import tf_extopt  # pylint: disable=g-import-not-at-top
from tf_extopt import test_problems  # pylint: disable=g-import-not-at-top
# Private modules, for part 3, which times the solver's own pieces.
from tf_extopt._solver._lbfgsb import _cauchy  # pylint: disable=g-import-not-at-top
from tf_extopt._solver._lbfgsb import _compact  # pylint: disable=g-import-not-at-top
from tf_extopt._solver import _memory  # pylint: disable=g-import-not-at-top
from tf_extopt._solver._lbfgsb import _subspace  # pylint: disable=g-import-not-at-top

SCIPY_FTOL = 2.220446049250313e-09   # SciPy's default factr * eps.
PGTOL = 1e-5
MAXLS = 20
MAX_ITERATIONS = 1000


def bounded_problems():
  """(name, objective, start, lower, upper) float64."""
  problems = []
  for problem in test_problems.PROBLEMS:
    start = problem.start
    n = start.size
    # A box around the start, cut so that roughly every other variable's
    # upper bound sits between the start and the unconstrained minimiser.
    lower = start - 2.0 - np.abs(start)
    upper = np.where(np.arange(n) % 2 == 0, start + 0.5, start + 4.0
                     + np.abs(start))
    problems.append((problem.name + "_boxed", problem.objective, start,
                     lower, upper))
  problems.append(("rosenbrock_4_upper_active", test_problems._rosenbrock,
                   np.array([-1.2, 1.0, -1.2, 1.0]),
                   np.array([-1.5, -1.0, -1.0, -1.0]),
                   np.array([0.8, 2.0, 2.0, 2.0])))
  problems.append(("rosenbrock_4_inactive_box", test_problems._rosenbrock,
                   np.array([-1.2, 1.0, -1.2, 1.0]), np.full(4, -2.0),
                   np.full(4, 2.0)))
  for seed in range(3):
    rng = np.random.RandomState(seed)
    n = 20
    q = rng.randn(n, n)
    a = q @ q.T / n + np.diag(rng.uniform(0.1, 10.0, n))
    b = 3.0 * rng.randn(n)
    problems.append((f"random_qp_20_{seed}", _qp(a, b), np.zeros(n),
                     -rng.uniform(0.1, 1.0, n), rng.uniform(0.1, 1.0, n)))
  rng = np.random.RandomState(7)
  a = np.diag(rng.uniform(1.0, 3.0, 10))
  b = 100.0 * np.where(np.arange(10) % 2 == 0, 1.0, -1.0)
  problems.append(("qp_10_all_at_bounds", _qp(a, b), np.zeros(10),
                   -np.ones(10), np.ones(10)))
  return problems


def _qp(a, b):
  def objective(x):
    a_ = tf.constant(a, x.dtype)
    return (0.5 * tf.reduce_sum(x * tf.linalg.matvec(a_, x), axis=-1)
            + tf.reduce_sum(tf.constant(b, x.dtype) * x, axis=-1))
  return objective


def ours_options():
  return dict(tolerance=PGTOL, f_relative_tolerance=SCIPY_FTOL,
              f_absolute_tolerance=SCIPY_FTOL, max_iterations=MAX_ITERATIONS,
              max_line_search_iterations=MAXLS)


def scipy_options():
  return dict(ftol=SCIPY_FTOL, gtol=PGTOL, maxls=MAXLS,
              maxiter=MAX_ITERATIONS)


def part_one():
  rows = []
  for name, objective, start, lower, upper in bounded_problems():
    function = test_problems.value_and_gradients(objective)
    solve = tf.function(lambda x, f=function, lo=lower, hi=upper:
                        tf_extopt.lbfgsb_minimize(f, x, lo, hi,
                                                  **ours_options()))
    ours = solve(tf.constant(start))
    reference = scipy.optimize.minimize(
        test_problems.numpy_function(objective), start, jac=True,
        method="L-BFGS-B", bounds=list(zip(lower, upper)),
        options=scipy_options())
    f_ours = float(ours.objective_value.numpy())
    scale = max(1.0, abs(reference.fun))
    solved = (bool(ours.converged.numpy()) and not bool(ours.failed.numpy())
              and f_ours <= reference.fun + 1e-6 * scale)
    rows.append((name, start.size, reference.nfev, reference.success,
                 reference.fun, int(ours.num_objective_evaluations.numpy()),
                 solved, f_ours))
  print("## Bounded problems, one at a time (float64)\n")
  print("| problem | n | SciPy evals | SciPy ok | SciPy f | ours evals | "
        "ours solved | ours f | evals ratio |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, n, s_evals, s_ok, s_f, o_evals, o_ok, o_f in rows:
    print(f"| {name} | {n} | {s_evals} | {s_ok} | {s_f:.6g} | {o_evals} | "
          f"{o_ok} | {o_f:.6g} | {o_evals / s_evals:.2f} |")
  s_med = np.median([r[2] for r in rows])
  o_med = np.median([r[5] for r in rows])
  ratios = [r[5] / r[2] for r in rows]
  print(f"\nSolved: ours {sum(r[6] for r in rows)}/{len(rows)}, SciPy "
        f"{sum(r[3] for r in rows)}/{len(rows)}. Median evaluations: SciPy "
        f"{s_med:g}, ours {o_med:g} (ratio of medians {o_med / s_med:.2f}; "
        f"median of per-problem ratios {np.median(ratios):.2f}).\n")
  return rows


def _numpy_rosenbrock(x):
  return scipy.optimize.rosen(x), scipy.optimize.rosen_der(x)


def batch_problems(size, n, seed):
  rng = np.random.RandomState(seed)
  start = rng.uniform(-2.0, 2.0, (size, n))
  lower = rng.uniform(-2.5, -0.5, (size, n))
  upper = rng.uniform(0.3, 1.5, (size, n))
  return start, lower, upper


def part_two(size, n, rounds=3):
  function = test_problems.value_and_gradients(test_problems._rosenbrock)

  def solve(start, lower, upper):
    return tf_extopt.lbfgsb_minimize(function, start, lower, upper,
                                     **ours_options())

  ours_calls = {"one XLA call": tf.function(solve, jit_compile=True),
                "one tf.function call": tf.function(solve)}
  warm = [tf.constant(v) for v in batch_problems(size, n, seed=1)]
  for call in ours_calls.values():
    call(*warm)                                    # trace and compile
  start, lower, upper = batch_problems(size, n, seed=2)
  args = [tf.constant(v) for v in (start, lower, upper)]

  def scipy_loop():
    return [scipy.optimize.minimize(
        _numpy_rosenbrock, start[i], jac=True, method="L-BFGS-B",
        bounds=list(zip(lower[i], upper[i])), options=scipy_options())
            for i in range(size)]

  # Rounds with the solvers in turns so that a busy spell on the shared
  # host slows all; the speed-ups are the medians of per-round ratios.
  times = {name: [] for name in ours_calls}
  scipy_times, results = [], {}
  for _ in range(rounds):
    for name, call in ours_calls.items():
      began = time.perf_counter()
      results[name] = call(*args)
      results[name].objective_value.numpy()        # waits for the result
      times[name].append(time.perf_counter() - began)
    began = time.perf_counter()
    references = scipy_loop()
    scipy_times.append(time.perf_counter() - began)
  dense = n <= tf_extopt.lbfgsb.DENSE_RATIO * 10
  scipy_f = np.array([r.fun for r in references])
  scipy_x = np.stack([r.x for r in references])
  print(f"## A batch of {size} bounded {n}-D Rosenbrock problems (float64, "
        "own box and start each)\n")
  print("| solver | wall time (s) | vs SciPy loop | solved | same minimiser "
        "| evaluations |")
  print("|---|---:|---:|---|---|---|")
  print(f"| SciPy L-BFGS-B, Python loop | {np.median(scipy_times):.3f} | "
        f"1.0x | {sum(r.success for r in references)}/{size} | - | total "
        f"{sum(r.nfev for r in references)}, median "
        f"{np.median([r.nfev for r in references]):g} per problem |")
  for name, ours in results.items():
    ours_f = ours.objective_value.numpy()
    solved = (ours.converged.numpy() & ~ours.failed.numpy()
              & (ours_f <= scipy_f + 1e-6 * np.maximum(1.0, np.abs(scipy_f))))
    close = np.max(np.abs(ours.position.numpy() - scipy_x), axis=-1) <= 1e-4
    speed_up = np.median(np.array(scipy_times) / np.array(times[name]))
    print(f"| lbfgsb_minimize, {name} | {np.median(times[name]):.3f} | "
          f"{speed_up:.1f}x | {int(solved.sum())}/{size} | "
          f"{int(close.sum())}/{size} | "
          f"{int(ours.num_objective_evaluations.numpy())} batched calls |")
  print(f"\nTimes are medians of {rounds} alternating rounds, speed-ups "
        "medians of the per-round ratios. Same minimiser: sup-norm distance "
        "to SciPy's "
        f"<= 1e-4. {'Explicit n x n matrix' if dense else 'Compact form'}"
        " (m = 10).\n")


def profile(size, dims, repeats=20):
  num_pairs = 10
  print(f"## One loop trip of the compact path, {size} members, m = "
        f"{num_pairs}\n")
  print("| n | mode | compact form | generalized Cauchy point | subspace step "
        "| (two-loop recursion) |")
  print("|---:|---|---:|---:|---:|---:|")
  for n in dims:
    if n <= tf_extopt.lbfgsb.DENSE_RATIO * num_pairs:
      continue
    rng = np.random.RandomState(n)
    memory = _memory.empty(size, num_pairs, n, tf.float64)
    for _ in range(num_pairs):
      s = rng.randn(size, n)
      y = 2.0 * s + 0.1 * rng.randn(size, n)
      memory = _memory.push(memory, tf.constant(s), tf.constant(y),
                            tf.ones([size], tf.bool))
    x = rng.uniform(-1.0, 1.0, (size, n))
    x[rng.uniform(size=(size, n)) < 0.2] = 1.5
    x, g = tf.constant(x), tf.constant(rng.randn(size, n))
    lower = tf.fill([size, n], tf.constant(-1.5, tf.float64))
    upper = -lower

    def cauchy_point(x, g, compact, lower=lower, upper=upper):
      return _cauchy.generalized_cauchy_point(x, g, lower, upper, compact)

    for mode, jit in (("XLA", True), ("tf.function", False)):
      pieces = [tf.function(piece, jit_compile=jit) for piece in (
          _compact.compact_form, cauchy_point, _subspace.compact_newton_step,
          _memory.direction)]
      compact = pieces[0](memory)
      cauchy = pieces[1](x, g, compact)
      arguments = [(memory,), (x, g, compact), (x, g, compact, cauchy),
                   (memory, g)]
      cells = []
      for function, args in zip(pieces, arguments):
        function(*args)                              # compile, warm up
        times = []
        for _ in range(repeats):
          began = time.perf_counter()
          tf.nest.map_structure(lambda t: t.numpy(), function(*args))
          times.append(time.perf_counter() - began)
        cells.append(f"{1e3 * np.median(times):.1f} ms")
      print(f"| {n} | {mode} | " + " | ".join(cells) + " |")
  print()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=1000)
  parser.add_argument("--dims", default="4,30,100",
                      help="comma-separated problem sizes n for part 2")
  parser.add_argument("--skip-single", action="store_true")
  parser.add_argument("--rounds", type=int, default=3,
                      help="alternating timed rounds in part 2")
  parser.add_argument("--profile", action="store_true",
                      help="time the compact path's pieces instead")
  args = parser.parse_args()
  if args.profile:
    profile(args.batch, [int(n) for n in args.dims.split(",")])
    return
  if not args.skip_single:
    part_one()
  for n in args.dims.split(","):
    part_two(args.batch, int(n), args.rounds)


if __name__ == "__main__":
  main()
