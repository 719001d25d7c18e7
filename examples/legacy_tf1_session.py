"""A TF1-style program (placeholders, a session) unchanged except the import.

This is what a `tf.contrib.opt.ScipyOptimizerInterface` program looked like
under TensorFlow 1.x. The only line that changed is the import:

    # from tensorflow.contrib.opt import ScipyOptimizerInterface
    from tf_extopt import ScipyOptimizerInterface

The second half runs the same graph with `LbfgsOptimizerInterface`, whose
whole solve is one `session.run` on the device.

Run: python examples/legacy_tf1_session.py [--out plots] [--small] [--no-plot]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

from tf_extopt import LbfgsOptimizerInterface  # pylint: disable=g-import-not-at-top
from tf_extopt import ScipyOptimizerInterface  # pylint: disable=g-import-not-at-top


def plot(path, x_data, y_data, w, b):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed (pip install tf_extopt[examples]); "
          "no plot written.")
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.scatter(x_data[:, 0], y_data[:, 0], s=6, alpha=0.5, label="data")
  grid = np.linspace(x_data[:, 0].min(), x_data[:, 0].max(), 50)
  ax.plot(grid, w[0, 0] * grid + w[1, 0] * grid ** 2 + b[0], color="C3",
          label="fit")
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.legend()
  ax.set_title("TF1 session: least squares with ScipyOptimizerInterface")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="plots")
  parser.add_argument("--small", action="store_true")
  parser.add_argument("--no-plot", action="store_true")
  args = parser.parse_args(argv)
  samples = 50 if args.small else 500

  # ---- The TF1 program, as it was written for tf.contrib. ----
  tf.disable_v2_behavior()
  rng = np.random.RandomState(0)
  x_data = rng.uniform(-2, 2, size=(samples, 1)).astype(np.float32)
  features = np.concatenate([x_data, x_data ** 2], axis=1)
  true_w = np.array([[1.5], [-0.7]], dtype=np.float32)
  true_b = np.array([0.3], dtype=np.float32)
  y_data = features.dot(true_w) + true_b + 0.05 * rng.normal(
      size=(samples, 1)).astype(np.float32)

  x = tf.placeholder(tf.float32, [None, 2], name="x")
  y = tf.placeholder(tf.float32, [None, 1], name="y")
  w = tf.Variable(tf.zeros([2, 1]), name="w")
  b = tf.Variable(tf.zeros([1]), name="b")
  loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
  optimizer = ScipyOptimizerInterface(loss, options={"maxiter": 100})

  with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    optimizer.minimize(session, feed_dict={x: features, y: y_data})
    w_scipy, b_scipy, loss_scipy = session.run(
        [w, b, loss], feed_dict={x: features, y: y_data})
  # ---- End of the TF1 program. ----
  print("ScipyOptimizerInterface: w = %s, b = %s, loss = %.4e" %
        (np.round(w_scipy.ravel(), 4), np.round(b_scipy, 4), loss_scipy))

  # The same graph, solved on the device: one session.run for the solve.
  on_device = LbfgsOptimizerInterface(loss, max_iterations=100)
  with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    result = on_device.minimize(session, feed_dict={x: features, y: y_data})
    w_lbfgs, b_lbfgs = session.run([w, b])
  print("LbfgsOptimizerInterface: w = %s, b = %s, loss = %.4e "
        "(%d iterations)" % (np.round(w_lbfgs.ravel(), 4),
                             np.round(b_lbfgs, 4), result.fun, result.nit))
  difference = float(max(np.abs(w_lbfgs - w_scipy).max(),
                         np.abs(b_lbfgs - b_scipy).max()))
  error = float(max(np.abs(w_scipy - true_w).max(),
                    np.abs(b_scipy - true_b).max()))
  print("max |scipy - lbfgs| = %.3e" % difference)
  print("max |scipy - true| = %.3e" % error)

  path = None
  if not args.no_plot:
    os.makedirs(args.out, exist_ok=True)
    path = plot(os.path.join(args.out, "legacy_tf1_session.png"), x_data,
                y_data, w_scipy, b_scipy)
    if path:
      print("Plot written to", path)
  return {"scipy_loss": float(loss_scipy), "lbfgs_loss": float(result.fun),
          "difference": difference, "error": error, "plot": path}


if __name__ == "__main__":
  main()
