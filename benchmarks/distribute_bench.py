"""What `tf.distribute` adds to each evaluation of full-batch L-BFGS.

`tf_extopt.keras.fit` on the 4096 x 64 MLP of `keras_bench.py` (Keras 3,
tanh, MSE, 4096 samples, float32), from the same initial weights, with:

* one device, no strategy (the baseline);
* `MirroredStrategy` over 1 and over 2 logical CPU devices (this process);
* `MultiWorkerMirroredStrategy` with 1 and with 2 local worker processes
  (a `TF_CONFIG` cluster on 127.0.0.1; each worker runs this script with
  `--worker`, and the chief's measurements are reported).

Per iteration and per evaluation costs exclude tracing and set-up: a Keras
callback clocks the end of every iteration of a `fit` run to the cap
(`tolerance=0`), and the cost is the time from the end of iteration 2 to the
last, divided by the iterations (evaluations) in between. Each configuration
is warmed up by one run, then run `--repeats` times; the median is
reported, and the ratio is to the one-device row.
All-reduced bytes per evaluation are the float64 vector `[loss, gradient]`
that the evaluator sums across replicas, `8 * (1 + parameters)`; per
iteration, that times the run's evaluations per iteration (multi-worker runs
add a 4-byte stop vote per iteration).

On this 2-core machine no speed-up is expected: the devices and workers
share the same two cores. The table shows the overhead that distribution
adds per evaluation; the target is at most 1.3x one device for
`MirroredStrategy` over 2 devices.

Run: python benchmarks/distribute_bench.py [--iterations 50] [--repeats 3]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

_SAMPLES, _WIDTH, _FEATURES = 4096, 64, 8


def _split_cpu():
  """Two logical CPU devices; must run before TensorFlow's first op."""
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration()] * 2)


def _problem(strategy):
  """The data and a compiled model (under `strategy`'s scope, if any)."""
  import keras  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(size=(_SAMPLES, _FEATURES)).astype(np.float32)
  y = (np.sin(x).sum(axis=1, keepdims=True)
       + 0.1 * rng.normal(size=(_SAMPLES, 1))).astype(np.float32)

  # The default strategy's scope is one device, as without a strategy.
  scope = (strategy or tf.distribute.get_strategy()).scope

  def build():
    with scope():
      keras.utils.set_random_seed(0)
      model = keras.Sequential([
          keras.Input((_FEATURES,)),
          keras.layers.Dense(_WIDTH, activation="tanh"),
          keras.layers.Dense(_WIDTH, activation="tanh"),
          keras.layers.Dense(1),
      ])
      model.compile(loss="mse")
    return model

  return x, y, build


def _measure(strategy, method, iterations, repeats):
  """Median per-iteration and per-evaluation seconds of `fit`, and counts."""
  import keras  # pylint: disable=g-import-not-at-top
  import tf_extopt  # pylint: disable=g-import-not-at-top
  x, y, build = _problem(strategy)
  options = ({"tolerance": 0.} if method == "lbfgs" else
             {"options": {"ftol": 0., "gtol": 0.}})

  class Clock(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.times = []

    def on_epoch_end(self, epoch, logs=None):
      self.times.append(time.perf_counter())

  def run():
    model, clock = build(), Clock()
    history = tf_extopt.keras.fit(model, x, y, method=method,
                                  max_iterations=iterations, verbose=0,
                                  callbacks=[clock], **options)
    # From the end of iteration 2: the first ones include tracing.
    elapsed = clock.times[-1] - clock.times[1]
    evaluations = history.evaluations[-1] - history.evaluations[1]
    return (elapsed / (len(clock.times) - 2), elapsed / evaluations,
            history.evaluations[-1], model.count_params(), len(clock.times))

  run()  # Warm-up: Keras and tf.data set-up.
  rows = [run() for _ in range(repeats)]
  return dict(s_per_iteration=statistics.median(r[0] for r in rows),
              s_per_evaluation=statistics.median(r[1] for r in rows),
              evaluations=rows[-1][2], params=rows[-1][3],
              iterations=rows[-1][4])


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _workers(count, method, iterations, repeats):
  """Runs `count` local MultiWorkerMirrored workers; the chief's result."""
  cluster = {"worker": ["127.0.0.1:%d" % _free_port() for _ in range(count)]}
  processes = []
  try:
    for index in range(count):
      env = dict(os.environ, TF_CONFIG=json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}}))
      processes.append(subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), "--worker", method,
           "--iterations", str(iterations), "--repeats", str(repeats)],
          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [p.communicate(timeout=3600) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(processes, outputs):
    if p.returncode:
      raise RuntimeError("worker failed:\n" + err.decode()[-3000:])
  return json.loads(outputs[0][0].decode().strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print(json.dumps(_measure(strategy, args.worker, args.iterations,
                              args.repeats)))
    return
  _split_cpu()
  devices = [d.name for d in tf.config.list_logical_devices("CPU")]
  print("keras.fit, %d samples x %d MLP (float32), %d iterations, median "
        "of %d runs; TF %s; %d CPU cores\n" %
        (_SAMPLES, _WIDTH, args.iterations, args.repeats, tf.__version__,
         os.cpu_count()))
  print("| method | configuration | replicas | ms / iteration | ms / "
        "evaluation | per evaluation vs one device | iterations | "
        "evaluations | all-reduced per evaluation | per iteration |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for method in ("lbfgs", "L-BFGS-B"):
    configurations = [
        ("one device, no strategy", 1,
         lambda: _measure(None, method, args.iterations, args.repeats)),
        ("MirroredStrategy, 1 device", 1, lambda: _measure(
            tf.distribute.MirroredStrategy(devices[:1]), method,
            args.iterations, args.repeats)),
        ("MirroredStrategy, 2 logical devices", 2, lambda: _measure(
            tf.distribute.MirroredStrategy(devices[:2]), method,
            args.iterations, args.repeats)),
        ("MultiWorkerMirrored, 1 local worker", 1,
         lambda: _workers(1, method, args.iterations, args.repeats)),
        ("MultiWorkerMirrored, 2 local workers", 2,
         lambda: _workers(2, method, args.iterations, args.repeats)),
    ]
    baseline = None
    for name, replicas, measure in configurations:
      row = measure()
      baseline = baseline or row["s_per_evaluation"]
      per_evaluation = 8 * (1 + row["params"]) / 1e3
      per_iteration = per_evaluation * row["evaluations"] / row["iterations"]
      reduced = ("- | -" if name.startswith("one device") else
                 "%.1f KB | %.1f KB" % (per_evaluation, per_iteration))
      print("| %s | %s | %d | %.2f | %.2f | %.2fx | %d | %d | %s |" % (
          method, name, replicas, 1e3 * row["s_per_iteration"],
          1e3 * row["s_per_evaluation"],
          row["s_per_evaluation"] / baseline, row["iterations"],
          row["evaluations"], reduced))
      sys.stdout.flush()


if __name__ == "__main__":
  main()
