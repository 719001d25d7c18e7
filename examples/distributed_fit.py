"""Full-batch L-BFGS on several devices with `tf.distribute`.

Two ways in, both with `MirroredStrategy` (here over two logical devices
carved out of the CPU, so that it runs on any machine):

1. a Keras model built under `strategy.scope()`: Adam with Keras' own
   `fit`, then L-BFGS with `tf_extopt.keras.fit`, unchanged: the data is
   split across replicas and each evaluation is one all-reduce;
2. a custom loss through `LbfgsOptimizerInterface`, written per replica:
   each replica takes its share of the points and scales its loss with
   `tf.nn.compute_average_loss`, so that the replicas' losses sum to the
   full loss.

Each is printed beside the same run on one device: the losses agree up to
float32 round-off (different summation orders), grown over the iterations.
The same code runs on `MultiWorkerMirroredStrategy` (set `TF_CONFIG` on
every worker) and, untested, on `TPUStrategy`.

Run: python examples/distributed_fit.py [--small]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

import tf_extopt  # pylint: disable=g-import-not-at-top


def two_devices():
  """Two logical CPU devices (the split must come before TF's first op)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  if len(tf.config.get_logical_device_configuration(cpu) or []) < 2:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  return [d.name for d in tf.config.list_logical_devices("CPU")[:2]]


def make_data(samples):
  rng = np.random.default_rng(0)
  x = rng.uniform(-2, 2, size=(samples, 2)).astype(np.float32)
  y = (np.sin(2 * x[:, :1]) * np.cos(x[:, 1:])).astype(np.float32)
  return x, y


def make_model(width, strategy):
  """The model, built under `strategy`'s scope (None: one device)."""
  # The default strategy's scope is one device, as without a strategy.
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(width, activation="tanh"),
        keras.layers.Dense(width, activation="tanh"),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
  return model


def keras_fit(strategy, x, y, width, iterations):
  """Adam, then L-BFGS; returns the L-BFGS loss history."""
  model = make_model(width, strategy)
  model.fit(x, y, epochs=20, batch_size=len(x), shuffle=False, verbose=0)
  # On the device in both runs: `method='auto'` would take SciPy's
  # L-BFGS-B for a short run on one CPU.
  history = tf_extopt.keras.fit(model, x, y, method="lbfgs",
                                max_iterations=iterations, verbose=0)
  return history.history["loss"]


def custom_loss(strategy, x, y, width, iterations):
  """L-BFGS on a per-replica loss; returns the final loss."""
  model = make_model(width, strategy)
  x, y = tf.constant(x), tf.constant(y)
  n = len(x)

  def loss():
    # Each replica takes every k-th point (one replica: all of them) and
    # scales by the global number of points: the replicas' losses sum to
    # the mean over all points.
    context = tf.distribute.get_replica_context()
    rows = tf.range(context.replica_id_in_sync_group, n,
                    context.num_replicas_in_sync)
    xs, ys = tf.gather(x, rows), tf.gather(y, rows)
    per_point = tf.square(model(xs)[:, 0] - ys[:, 0])
    return tf.nn.compute_average_loss(per_point, global_batch_size=n)

  result = tf_extopt.LbfgsOptimizerInterface(
      loss, model, max_iterations=iterations).minimize()
  return result.fun


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--small", action="store_true",
                      help="fewer points and iterations (for the tests)")
  args = parser.parse_args(argv)
  devices = two_devices()
  samples, width, iterations = (256, 8, 20) if args.small else (4096, 32, 200)
  x, y = make_data(samples)
  strategy = tf.distribute.MirroredStrategy(devices)
  print("MirroredStrategy over %s" % ", ".join(devices))

  one_device = keras_fit(None, x, y, width, iterations)
  mirrored = keras_fit(strategy, x, y, width, iterations)
  print("keras.fit, %d L-BFGS iterations: loss %.6e on 2 replicas, %.6e on "
        "one device" % (len(mirrored), mirrored[-1], one_device[-1]))

  one_device_custom = custom_loss(None, x, y, width, iterations)
  mirrored_custom = custom_loss(strategy, x, y, width, iterations)
  print("LbfgsOptimizerInterface, per-replica loss: %.6e on 2 replicas, "
        "%.6e on one device" % (mirrored_custom, one_device_custom))
  return dict(keras_fit=(mirrored, one_device),
              custom_loss=(mirrored_custom, one_device_custom))


if __name__ == "__main__":
  main()
