"""DeepXDE's Burgers example on both TF backends: its L-BFGS against tf_extopt.

Each DeepXDE backend runs in its own process (`DDE_BACKEND`), driven through
`benchmarks/_deepxde_burgers.py`, the worker the integration tests use too. In that
process Adam trains the network once; then every L-BFGS run starts from the
same Adam weights, with DeepXDE's default L-BFGS options except `maxiter`:

* `tensorflow`: TFP's `lbfgs_minimize` (DeepXDE's default), then
  `tf_extopt.lbfgs_minimize` swapped in, with `maxiter` and 2x `maxiter`;
* `tensorflow.compat.v1`: DeepXDE's own copy of contrib's
  `ScipyOptimizerInterface`, then `tf_extopt.ScipyOptimizerInterface`, same
  budgets.

Runs alternate (rotated order per round); times are medians over rounds and
the speed-up is the median over rounds of baseline ms/iteration over ours in
the same round, so a busy spell on a shared machine slows both. For DeepXDE's
contrib copy the script also prints what SciPy saw (its stopping message, and
how many distinct loss values its evaluations returned).

Run: python benchmarks/clients_bench.py [--rounds 2] [--full]
  default: 500 collocation points, 300 Adam steps, maxiter 30 (a few minutes)
  --full:  the full schedule, 2540 points, 1000 Adam steps, maxiter 1000
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_ROOT, "benchmarks", "_deepxde_burgers.py")
_BACKENDS = ("tensorflow", "tensorflow.compat.v1")
_LABELS = {
    "tfp": "TFP's `lbfgs_minimize` (DeepXDE's default)",
    "deepxde": "DeepXDE's copy of contrib's `ScipyOptimizerInterface`",
    ("tensorflow", "tf_extopt"): "`tf_extopt.lbfgs_minimize`",
    ("tensorflow.compat.v1", "tf_extopt"):
        "`tf_extopt.ScipyOptimizerInterface`",
}


def run_backend(backend, args):
  """Runs every round of one backend in one process; returns its report."""
  solvers = [("baseline", args.maxiter), ("tf_extopt", args.maxiter),
             ("tf_extopt", 2 * args.maxiter)]
  # Untimed warm-up runs first: process-wide first-call costs (kernels,
  # imports, SciPy) then hit no timed run. Every timed run still pays its own
  # tracing (TF2) or graph optimisation (compat.v1), as a DeepXDE user does.
  runs = [{"solver": solver, "options": {"maxiter": 2}}
          for solver in ("baseline", "tf_extopt")]
  for r in range(args.rounds):
    shift = r % len(solvers)
    for solver, maxiter in solvers[shift:] + solvers[:shift]:
      runs.append({"solver": solver, "options": {"maxiter": maxiter}})
  report = run_worker(backend, runs, args.domain, args.adam, args.seed)
  report["runs"] = report["runs"][2:]  # Drop the warm-up runs.
  return report


def run_worker(backend, runs, domain, adam, seed):
  """Runs `_deepxde_burgers.py` on `backend` in a new process.

  `time_to_loss.py` runs it too.

  Args:
    backend: `DDE_BACKEND`, `'tensorflow'` or `'tensorflow.compat.v1'`.
    runs: The worker's `--runs`: `{solver, options}` dicts, each an L-BFGS
      `train()` from the Adam weights, run in this order.
    domain: Collocation points.
    adam: Adam steps before the L-BFGS runs.
    seed: DeepXDE's random seed.

  Returns:
    The worker's JSON report: `adam_loss`, and per run `seconds`, `loss`,
    `iterations`, `evaluations`... (see its `run_lbfgs`).
  """
  env = dict(os.environ, DDE_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  command = [sys.executable, _WORKER, "--domain", str(domain),
             "--adam", str(adam), "--runs", json.dumps(runs),
             "--seed", str(seed)]
  proc = subprocess.run(command, env=env, capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    sys.exit("%s worker failed:\n%s" % (backend, proc.stderr[-4000:]))
  return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(report, rounds):
  """Rows per (solver, maxiter): medians, and per-round paired speed-ups."""
  runs = report["runs"]
  per_round = len(runs) // rounds
  baseline = report["baseline"]
  groups = {}
  for i, run in enumerate(runs):
    key = (run["solver"], run["options"]["maxiter"])
    groups.setdefault(key, []).append((i // per_round, run))
  base_ms = {}
  for key, entries in groups.items():
    if key[0] == baseline:
      base_ms = {r: _ms_per_iteration(run) for r, run in entries}
  rows = []
  for (solver, maxiter), entries in groups.items():
    ms = [_ms_per_iteration(run) for _, run in entries]
    speedups = [base_ms[r] / _ms_per_iteration(run) for r, run in entries
                if base_ms.get(r) and _ms_per_iteration(run)]
    first = entries[0][1]
    rows.append(dict(
        solver=solver, maxiter=maxiter, run=first,
        iterations=statistics.median(run["iterations"] for _, run in entries),
        evaluations=statistics.median(run["evaluations"]
                                      for _, run in entries),
        seconds=statistics.median(run["seconds"] for _, run in entries),
        setup=statistics.median(run["seconds"] - run["solve_seconds"]
                                for _, run in entries),
        ms=statistics.median(ms) if all(m is not None for m in ms) else None,
        speedup=statistics.median(speedups) if speedups else None,
        loss=statistics.median(run["loss"] for _, run in entries)))
  rows.sort(key=lambda row: (row["solver"] != baseline, row["maxiter"]))
  return rows


def _ms_per_iteration(run):
  """Solve time per iteration, from the end of the first evaluation.

  What comes before it (DeepXDE tracing its loss function on the TF2
  backend, the session optimising the newly built graph on compat.v1) is a
  fixed cost of each `train()`, reported in the total time.
  """
  if not run["iterations"]:
    return None
  return 1e3 * run["solve_seconds"] / run["iterations"]


def print_table(reports, args):
  print("#### DeepXDE Burgers: %d collocation points, 3 x 20 tanh, %d Adam "
        "steps, then L-BFGS (DeepXDE's options, maxiter as listed); %d "
        "round(s)\n" % (args.domain, args.adam, args.rounds))
  print("| DeepXDE backend | L-BFGS used | maxiter | iterations | "
        "evaluations | time (set-up) | ms / iteration | "
        "speed-up per iteration | loss after Adam | final loss |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  notes = []
  for backend, report in reports:
    rows = summarize(report, args.rounds)
    # A baseline that never moved has no meaningful time per iteration.
    stuck = rows[0]["loss"] >= report["adam_loss"]
    for row in rows:
      label = _LABELS.get(row["solver"]) or _LABELS[(backend, row["solver"])]
      no_progress = row["loss"] >= report["adam_loss"]
      speedup = ("1.00x" if row["solver"] == report["baseline"] else
                 "n/a" if row["speedup"] is None or no_progress or stuck
                 else
                 "%.2fx" % row["speedup"])
      ms = "%.1f" % row["ms"] if row["ms"] is not None else "n/a"
      print("| `%s` | %s | %d | %g | %g | %.1f s (%.1f s) | %s | %s | %.2e "
            "| %.2e%s |"
            % (backend, label, row["maxiter"], row["iterations"],
               row["evaluations"], row["seconds"], row["setup"], ms, speedup,
               report["adam_loss"], row["loss"],
               " (no progress)" if no_progress else ""))
      run = row["run"]
      if "scipy_message" in run:
        notes.append(
            "`%s`, %s: SciPy stopped with \"%s\" after %d iteration(s); its "
            "%d evaluations returned %d distinct loss value(s). The network's "
            "variables are %s." % (
                backend, label, run["scipy_message"], run["scipy_iterations"],
                run["scipy_evaluations"], run["distinct_losses"],
                ", ".join(report["variable_types"])))
  print("\nTime: the whole `train()`; in brackets its set-up before the first "
        "evaluation returned (DeepXDE tracing its loss, or the session "
        "optimising the new graph). ms / iteration: the rest, per iteration. "
        "Speed-up: the baseline's ms / iteration over the row's, median of "
        "the per-round ratios; n/a when the baseline made no progress.")
  for note in notes:
    print("\n" + note)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true",
                      help="the full schedule: 2540 points, 1000 Adam "
                      "steps, maxiter 1000")
  parser.add_argument("--domain", type=int, help="collocation points")
  parser.add_argument("--adam", type=int, help="Adam steps")
  parser.add_argument("--maxiter", type=int,
                      help="L-BFGS maxiter (tf_extopt also runs 2x)")
  parser.add_argument("--rounds", type=int, default=2,
                      help="alternating rounds per backend")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--backend", choices=_BACKENDS, action="append",
                      help="only this backend (repeatable)")
  args = parser.parse_args(argv)
  defaults = (2540, 1000, 1000) if args.full else (500, 300, 30)
  for name, value in zip(("domain", "adam", "maxiter"), defaults):
    if getattr(args, name) is None:
      setattr(args, name, value)
  reports = [(backend, run_backend(backend, args))
             for backend in args.backend or _BACKENDS]
  print_table(reports, args)


if __name__ == "__main__":
  main()
