"""A Keras MLP trained with Adam, then finished with full-batch L-BFGS.

The documented flow of `tf_extopt.keras.fit`:

    model.fit(x, y, ...)                       # Adam
    tf_extopt.keras.fit(model, x, y, ...)      # then L-BFGS

From the same Adam warm start, the script compares Adam alone (continued
for as many full-batch gradient evaluations as L-BFGS uses) with L-BFGS, and
plots the training loss against the number of loss-and-gradient evaluations.

Run: python examples/keras_regression.py [--out plots] [--small] [--no-plot]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

import tf_extopt  # pylint: disable=g-import-not-at-top


def make_data(samples, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-2, 2, size=(samples, 2)).astype(np.float32)
  y = (np.sin(2 * x[:, :1]) * np.cos(x[:, 1:])
       + 0.02 * rng.normal(size=(samples, 1))).astype(np.float32)
  return x, y


def make_model(width, seed=0):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((2,)),
      keras.layers.Dense(width, activation="tanh"),
      keras.layers.Dense(width, activation="tanh"),
      keras.layers.Dense(1),
  ])
  # Full-batch Adam: one epoch is one loss-and-gradient evaluation, the same
  # unit L-BFGS counts in.
  model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
  return model


def plot(path, adam_epochs, adam_curve, lbfgs_evals, lbfgs_curve):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed (pip install tf_extopt[examples]); "
          "no plot written.")
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.semilogy(np.arange(1, len(adam_curve) + 1), adam_curve,
              label="Adam only")
  ax.semilogy(adam_epochs + np.asarray(lbfgs_evals), lbfgs_curve,
              label="Adam, then L-BFGS")
  ax.axvline(adam_epochs, color="gray", linestyle=":", linewidth=1)
  ax.set_xlabel("loss-and-gradient evaluations (full batch)")
  ax.set_ylabel("training MSE")
  ax.legend()
  ax.set_title("Keras MLP: Adam vs Adam then L-BFGS")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="plots", help="folder for the PNG")
  parser.add_argument("--small", action="store_true",
                      help="tiny sizes (smoke test)")
  parser.add_argument("--no-plot", action="store_true")
  args = parser.parse_args(argv)
  samples, width = (128, 8) if args.small else (1024, 32)
  adam_epochs, lbfgs_iterations = (10, 10) if args.small else (300, 300)

  x, y = make_data(samples)
  model = make_model(width)
  start = time.perf_counter()
  warm = model.fit(x, y, epochs=adam_epochs, batch_size=samples, verbose=0)
  adam_time = time.perf_counter() - start
  adam_curve = list(warm.history["loss"])
  warm_weights = model.get_weights()
  print("Adam: %d full-batch epochs, loss %.3e (%.1f s)" %
        (adam_epochs, adam_curve[-1], adam_time))

  start = time.perf_counter()
  history = tf_extopt.keras.fit(model, x, y, max_iterations=lbfgs_iterations,
                                verbose=0)
  lbfgs_time = time.perf_counter() - start
  lbfgs_loss = float(model.evaluate(x, y, verbose=0))
  lbfgs_evals = history.evaluations
  print("L-BFGS: %d iterations, %d evaluations, loss %.3e (%.1f s, "
        "including tracing)" % (len(history.history["loss"]),
                                lbfgs_evals[-1] if lbfgs_evals else 0,
                                lbfgs_loss, lbfgs_time))

  # Adam alone, continued from the same point for the same evaluations.
  model.set_weights(warm_weights)
  budget = max(lbfgs_evals[-1] if lbfgs_evals else 1, 1)
  more = model.fit(x, y, epochs=budget, batch_size=samples, verbose=0)
  adam_only = float(model.evaluate(x, y, verbose=0))
  adam_curve += list(more.history["loss"])
  print("Adam only: %d more epochs, loss %.3e" % (budget, adam_only))
  print("L-BFGS reached %.1fx lower loss for the same evaluations." %
        (adam_only / max(lbfgs_loss, 1e-30)))

  path = None
  if not args.no_plot:
    os.makedirs(args.out, exist_ok=True)
    path = plot(os.path.join(args.out, "keras_regression.png"), adam_epochs,
                adam_curve, lbfgs_evals, history.history["loss"])
    if path:
      print("Plot written to", path)
  return {"adam_loss": adam_only, "lbfgs_loss": lbfgs_loss,
          "warm_loss": adam_curve[adam_epochs - 1],
          "evaluations": budget, "plot": path}


if __name__ == "__main__":
  main()
