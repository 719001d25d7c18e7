"""A physics-informed network for viscous Burgers, Adam then L-BFGS.

Solves u_t + u u_x = nu u_xx on x in [-1, 1], t in [0, 1] with the initial
and boundary values of the exact travelling-shock solution

    u(x, t) = 1/2 - 1/2 tanh((x - t/2) / (4 nu)),

so the error of the trained network is measured against a known answer.
The loss is the mean squared PDE residual at random collocation points plus
the mean squared misfit of the initial and boundary values. A Keras MLP is
trained with Adam, then with on-device L-BFGS (`LbfgsOptimizerInterface`).

Run: python examples/pinn_burgers.py [--out plots] [--small] [--no-plot]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

from tf_extopt import LbfgsOptimizerInterface  # pylint: disable=g-import-not-at-top

NU = 0.05


def exact(x, t):
  return 0.5 - 0.5 * np.tanh((x - 0.5 * t) / (4 * NU))


def make_points(collocation, boundary, seed=0):
  rng = np.random.default_rng(seed)
  xt = np.stack([rng.uniform(-1, 1, collocation),
                 rng.uniform(0, 1, collocation)], axis=1)
  x0 = rng.uniform(-1, 1, boundary)
  tb = rng.uniform(0, 1, boundary)
  edges = np.concatenate([
      np.stack([x0, np.zeros_like(x0)], axis=1),            # t = 0
      np.stack([-np.ones_like(tb), tb], axis=1),            # x = -1
      np.stack([np.ones_like(tb), tb], axis=1)])            # x = +1
  values = exact(edges[:, 0], edges[:, 1])[:, None]
  as32 = lambda a: tf.constant(a, tf.float32)
  return as32(xt), as32(edges), as32(values)


def make_model(width, depth, seed=0):
  keras.utils.set_random_seed(seed)
  layers = [keras.Input((2,))]
  layers += [keras.layers.Dense(width, activation="tanh")
             for _ in range(depth)]
  layers += [keras.layers.Dense(1)]
  return keras.Sequential(layers)


def make_weights_loss(model, xt, edges, values):
  """The loss as a function of a list of weight tensors (the model's order).

  Evaluates the network with `model.stateless_call`, so the same loss serves
  Keras optimisers (through `make_loss`) and solvers that work on tensors.
  """

  def loss_of(weights):
    net = lambda inputs: model.stateless_call(weights, [], inputs)[0]
    x, t = xt[:, :1], xt[:, 1:]
    with tf.GradientTape() as outer:
      outer.watch(x)
      with tf.GradientTape(persistent=True) as inner:
        inner.watch([x, t])
        u = net(tf.concat([x, t], axis=1))
      u_x = inner.gradient(u, x)
      u_t = inner.gradient(u, t)
    u_xx = outer.gradient(u_x, x)
    residual = u_t + u * u_x - NU * u_xx
    pde = tf.reduce_mean(tf.square(residual))
    fit = tf.reduce_mean(tf.square(net(edges) - values))
    return pde + fit

  return loss_of


def make_loss(model, xt, edges, values):
  """The loss of the model's current weights, for Keras-style optimisers."""
  loss_of = make_weights_loss(model, xt, edges, values)
  return lambda: loss_of([v.value for v in model.trainable_variables])


def flat_objective(model, xt, edges, values):
  """`(value_and_gradients, start)` on one flat vector of the model's weights.

  This is the problem as `lbfgs_minimize` (ours or TFP's) sees it; `start`
  is the model's current weights, flattened.
  """
  loss_of = make_weights_loss(model, xt, edges, values)
  shapes = [tuple(v.shape) for v in model.trainable_variables]
  sizes = [int(np.prod(shape)) for shape in shapes]

  def value_and_gradients(flat):
    with tf.GradientTape() as tape:
      tape.watch(flat)
      pieces = tf.split(flat, sizes)
      value = loss_of([tf.reshape(p, s) for p, s in zip(pieces, shapes)])
    return value, tape.gradient(value, flat)

  start = tf.concat([tf.reshape(v.value, [-1])
                     for v in model.trainable_variables], axis=0)
  return value_and_gradients, start


def train_adam(model, loss, steps, learning_rate=1e-3):
  """`steps` Adam steps on `loss`; returns the final loss."""
  adam = keras.optimizers.Adam(learning_rate)

  @tf.function
  def adam_step():
    with tf.GradientTape() as tape:
      value = loss()
    grads = tape.gradient(value, model.trainable_variables)
    adam.apply_gradients(zip(grads, model.trainable_variables))
    return value

  for _ in range(steps):
    adam_step()
  return float(loss())


def relative_error(model, grid=101):
  x, t = np.meshgrid(np.linspace(-1, 1, grid), np.linspace(0, 1, grid))
  points = np.stack([x.ravel(), t.ravel()], axis=1).astype(np.float32)
  predicted = model(points).numpy().reshape(x.shape)
  reference = exact(x, t)
  error = np.linalg.norm(predicted - reference) / np.linalg.norm(reference)
  return float(error), (x, t, predicted, reference)


def plot(path, fields):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed (pip install tf_extopt[examples]); "
          "no plot written.")
    return None
  x, t, predicted, reference = fields
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  image = axes[0].pcolormesh(x, t, predicted, shading="auto")
  fig.colorbar(image, ax=axes[0])
  axes[0].set_title("PINN u(x, t)")
  axes[0].set_xlabel("x")
  axes[0].set_ylabel("t")
  for k, color in zip((0, len(t) // 2, len(t) - 1), ("C0", "C1", "C2")):
    axes[1].plot(x[k], reference[k], color=color, linestyle="--")
    axes[1].plot(x[k], predicted[k], color=color,
                 label="t = %.2f" % t[k, 0])
  axes[1].set_title("PINN (solid) vs exact (dashed)")
  axes[1].set_xlabel("x")
  axes[1].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="plots")
  parser.add_argument("--small", action="store_true",
                      help="tiny sizes (smoke test)")
  parser.add_argument("--no-plot", action="store_true")
  parser.add_argument("--jit", action="store_true",
                      help="compile the L-BFGS solve with XLA")
  args = parser.parse_args(argv)
  if args.small:
    collocation, boundary, width, depth = 200, 20, 8, 2
    adam_steps, lbfgs_iterations = 20, 15
  else:
    collocation, boundary, width, depth = 2000, 100, 20, 3
    adam_steps, lbfgs_iterations = 1000, 1500

  xt, edges, values = make_points(collocation, boundary)
  model = make_model(width, depth)
  loss = make_loss(model, xt, edges, values)

  start = time.perf_counter()
  adam_loss = train_adam(model, loss, adam_steps)
  adam_error, _ = relative_error(model)
  print("Adam: %d steps, loss %.3e, relative L2 error %.2e (%.1f s)" %
        (adam_steps, adam_loss, adam_error, time.perf_counter() - start))

  start = time.perf_counter()
  optimizer = LbfgsOptimizerInterface(
      loss, model, max_iterations=lbfgs_iterations, tolerance=1e-9,
      jit_compile=args.jit)
  result = optimizer.minimize()
  lbfgs_error, fields = relative_error(model)
  print("L-BFGS: %d iterations, %d evaluations, loss %.3e, relative L2 "
        "error %.2e (%.1f s)" % (result.nit, result.nfev, result.fun,
                                 lbfgs_error, time.perf_counter() - start))
  print("The error against the exact solution went from %.2e to %.2e." %
        (adam_error, lbfgs_error))
  path = None
  if not args.no_plot:
    os.makedirs(args.out, exist_ok=True)
    path = plot(os.path.join(args.out, "pinn_burgers.png"), fields)
    if path:
      print("Plot written to", path)
  return {"adam_loss": adam_loss, "adam_error": adam_error,
          "lbfgs_loss": float(result.fun), "lbfgs_error": lbfgs_error,
          "iterations": int(result.nit), "plot": path}


if __name__ == "__main__":
  main()
