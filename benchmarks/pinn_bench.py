"""Benchmark: L-BFGS progress on a PINN, tf_extopt against TFP.

The problem is `examples/pinn_burgers.py`'s (viscous Burgers, a tanh MLP,
PDE residual plus initial/boundary misfit), built by the example's own
`flat_objective`. Adam warms the network up once; from those same weights
both `tf_extopt.lbfgs_minimize` and `tfp.optimizer.lbfgs_minimize` run with
TFP's defaults except `max_iterations`, in chunks resumed through
`previous_optimizer_results` (both solvers follow the same path split or
not), so the loss can be printed against iterations and against wall time.

Each solver is traced and run once on a throwaway chunk before timing; the
chunks of the two solvers alternate, so a busy spell on a shared machine
slows both. Wall times are cumulative over the timed chunks.

Targets: at equal iterations, tf_extopt's loss within 2x of TFP's;
at equal wall time, lower than TFP's.

Run: python benchmarks/pinn_bench.py [--long]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_probability as tfp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import load_example  # pylint: disable=g-import-not-at-top,wrong-import-position

import tf_extopt  # pylint: disable=g-import-not-at-top,wrong-import-position


def make_solver(minimize, function):
  """A traced `(start or previous results, max_iterations) -> results` pair."""
  first = tf.function(lambda x, k: minimize(function, x, max_iterations=k),
                      autograph=False)
  resume = tf.function(lambda previous, k: minimize(
      function, None, previous_optimizer_results=previous, max_iterations=k),
                       autograph=False)
  return first, resume


def run_chunks(solvers, start, chunk, chunks):
  """Alternates the solvers chunk by chunk; returns per-solver histories.

  A history is a list of `(iterations, evaluations, loss, seconds)` after
  each chunk, seconds cumulative.
  """
  histories = [[] for _ in solvers]
  previous = [None for _ in solvers]
  elapsed = [0.0 for _ in solvers]
  for k in range(1, chunks + 1):
    target = tf.constant(k * chunk)
    for i, (first, resume) in enumerate(solvers):
      began = time.perf_counter()
      results = (first(start, target) if previous[i] is None
                 else resume(previous[i], target))
      loss = float(results.objective_value)
      elapsed[i] += time.perf_counter() - began
      previous[i] = results
      histories[i].append((int(results.num_iterations),
                           int(results.num_objective_evaluations), loss,
                           elapsed[i]))
  return histories


def loss_at_time(history, seconds):
  """The loss reached by `seconds` (the last chunk that ended by then)."""
  reached = [loss for _, _, loss, t in history if t <= seconds]
  return reached[-1] if reached else float("nan")


def print_tables(ours, theirs):
  print("### Loss against iterations (same start; TFP's defaults, "
        "max_iterations raised chunk by chunk)\n")
  print("| iterations | tf_extopt loss | TFP loss | ours/TFP | evaluations "
        "(ours/TFP) | wall s (ours/TFP) |")
  print("|---:|---:|---:|---:|---:|---:|")
  for (it, ev, loss, t), (it_t, ev_t, loss_t, t_t) in zip(ours, theirs):
    iterations = f"{it}" if it == it_t else f"{it}/{it_t}"
    print(f"| {iterations} | {loss:.3e} | {loss_t:.3e} | {loss / loss_t:.2f} "
          f"| {ev}/{ev_t} | {t:.1f}/{t_t:.1f} |")
  print()
  print("### Loss against wall time (loss at the last chunk finished by then)"
        "\n")
  print("| wall s | tf_extopt loss | TFP loss | ours/TFP |")
  print("|---:|---:|---:|---:|")
  horizon = min(ours[-1][3], theirs[-1][3])
  for fraction in (0.25, 0.5, 0.75, 1.0):
    seconds = fraction * horizon
    a, b = loss_at_time(ours, seconds), loss_at_time(theirs, seconds)
    print(f"| {seconds:.1f} | {a:.3e} | {b:.3e} | {a / b:.2f} |")
  print()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--long", action="store_true",
                      help="the full setting: 1000 Adam steps, then 1000 "
                           "L-BFGS iterations (several minutes per solver)")
  parser.add_argument("--adam-steps", type=int, default=None)
  parser.add_argument("--iterations", type=int, default=None)
  parser.add_argument("--chunk", type=int, default=None)
  args = parser.parse_args()
  adam_steps = args.adam_steps or (1000 if args.long else 300)
  iterations = args.iterations or (1000 if args.long else 200)
  chunk = args.chunk or (100 if args.long else 25)

  example = load_example("pinn_burgers")
  print(f"TensorFlow {tf.__version__}, TFP {tfp.__version__}; "
        f"{adam_steps} Adam steps, then {iterations} L-BFGS iterations\n")
  xt, edges, values = example.make_points(2000, 100)
  model = example.make_model(20, 3)
  adam_loss = example.train_adam(
      model, example.make_loss(model, xt, edges, values), adam_steps)
  function, start = example.flat_objective(model, xt, edges, values)
  print(f"Start: loss {adam_loss:.3e} after Adam, {int(start.shape[0])} "
        "weights (float32)\n")

  labels = ("tf_extopt", "TFP")
  solvers = [make_solver(minimize, function)
             for minimize in (tf_extopt.lbfgs_minimize,
                              tfp.optimizer.lbfgs_minimize)]
  for first, resume in solvers:  # Trace and run each once before timing.
    resume(first(start, tf.constant(1)), tf.constant(2))
  ours, theirs = run_chunks(solvers, start, chunk, iterations // chunk)
  print_tables(ours, theirs)
  for label, history in zip(labels, (ours, theirs)):
    it, ev, loss, seconds = history[-1]
    print(f"{label}: {it} iterations, {ev} evaluations, loss {loss:.3e}, "
          f"{seconds:.1f} s")


if __name__ == "__main__":
  main()
