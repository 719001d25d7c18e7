"""What keeping the best point costs `LbfgsOptimizerInterface` per iteration.

The on-device objective records the best finite point it has
evaluated in two variables (so that a chunk that raises still leaves the
variables at the best point reached). This script times the same Keras 3
MLPs as `keras_bench.py` with and without that recording, in one process:
both interfaces are built and warmed up first, then timed in alternating
order for `--rounds` rounds; the table gives the median time per iteration
of each and the median of the per-round ratios. Both follow the same path
(the evaluation counts are checked to be equal).

Run: python benchmarks/best_point_bench.py [--rounds 9] [--maxiter 50]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import make_problem  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_extopt import LbfgsOptimizerInterface  # pylint: disable=g-import-not-at-top,wrong-import-position


class _Untracked(LbfgsOptimizerInterface):
  """The interface as it was before: the objective records nothing."""

  def _objective(self, x):
    loss, grad = self._evaluator.value_and_gradient_tf(tf.cast(x, tf.float64))
    return tf.cast(loss, self._dtype), tf.cast(grad, self._dtype)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--maxiter", type=int, default=50)
  args = parser.parse_args()
  print("| model (samples x width) | XLA | ms/iter untracked | ms/iter tracked "
        "| tracked / untracked (median of per-round ratios) |")
  print("|---|---|---:|---:|---:|")
  for samples, width in ((256, 16), (4096, 64)):
    model, loss_fn, tf_vars, initial = make_problem(samples, width)
    for jit in (False, True):
      opts = {name: cls(loss_fn, model, max_iterations=args.maxiter,
                        tolerance=0.0, jit_compile=jit)
              for name, cls in (("untracked", _Untracked),
                                ("tracked", LbfgsOptimizerInterface))}

      def run(opt):
        for v, value in zip(tf_vars, initial):
          v.assign(value)
        start = time.perf_counter()
        result = opt.minimize()
        return (time.perf_counter() - start) / result.nit, result.nfev

      for opt in opts.values():  # Warm up: traces and compiles.
        run(opt)
      times = {name: [] for name in opts}
      ratios = []
      for i in range(args.rounds):
        order = sorted(opts, reverse=bool(i % 2))
        got = {name: run(opts[name]) for name in order}
        assert got["tracked"][1] == got["untracked"][1]
        for name, (per_iteration, _) in got.items():
          times[name].append(per_iteration)
        ratios.append(got["tracked"][0] / got["untracked"][0])
      print("| %d x %d | %s | %.3f | %.3f | %.3f |" % (
          samples, width, "yes" if jit else "no",
          1e3 * statistics.median(times["untracked"]),
          1e3 * statistics.median(times["tracked"]),
          statistics.median(ratios)))


if __name__ == "__main__":
  main()
