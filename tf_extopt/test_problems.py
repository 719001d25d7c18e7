"""Classic unconstrained test problems as batched TensorFlow functions.

Most come from Moré, Garbow & Hillstrom, "Testing unconstrained optimization
software", ACM TOMS 7(1), 1981 (MGH); the rest are common benchmark
functions and TFP's documented 60-D bowl. Every objective maps `[..., n]` to
`[...]`, so the same problem runs one at a time or batched; pair one with
`value_and_gradients` to get what `lbfgs_minimize` and SciPy need.

These are used by the package's tests and benchmarks, and are handy for
checking an optimiser on a new platform.
"""

import collections

import numpy as np
import tensorflow as tf

__all__ = ["Problem", "PROBLEMS", "value_and_gradients", "numpy_function"]

Problem = collections.namedtuple(
    "Problem", ["name", "objective", "start", "minimum_value",
                "minimizer_is_unique"])
Problem.__doc__ = """A test problem.

Attributes:
  name: short identifier.
  objective: callable `[..., n] -> [...]` written with TF ops.
  start: float64 NumPy starting point `[n]` (MGH's standard start).
  minimum_value: the known global minimum value, or None.
  minimizer_is_unique: whether different solvers may be compared by position
    (False when the function has several minima or a flat valley).
"""


def value_and_gradients(objective):
  """Wraps `objective` into the `(value, gradient)` function solvers call."""

  def value_and_gradients_function(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      value = objective(x)
    return value, tape.gradient(value, x)

  return value_and_gradients_function


def numpy_function(objective, dtype=tf.float64):
  """Returns a compiled `x -> (value, gradient)` on NumPy arrays, for SciPy."""
  compiled = tf.function(value_and_gradients(objective), reduce_retracing=True)

  def fun(x):
    value, gradient = compiled(tf.constant(x, dtype))
    return float(value.numpy()), gradient.numpy().astype(np.float64)

  return fun


def _rosenbrock(x):
  return tf.reduce_sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2
                       + (1.0 - x[..., :-1]) ** 2, axis=-1)


def _helical_valley(x):
  x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
  theta = tf.math.atan2(x2, x1) / (2.0 * np.pi)
  return (100.0 * (x3 - 10.0 * theta) ** 2
          + 100.0 * (tf.sqrt(x1 ** 2 + x2 ** 2) - 1.0) ** 2 + x3 ** 2)


def _powell_singular(x):
  x1, x2, x3, x4 = (x[..., i] for i in range(4))
  return ((x1 + 10.0 * x2) ** 2 + 5.0 * (x3 - x4) ** 2
          + (x2 - 2.0 * x3) ** 4 + 10.0 * (x1 - x4) ** 4)


def _wood(x):
  x1, x2, x3, x4 = (x[..., i] for i in range(4))
  return (100.0 * (x2 - x1 ** 2) ** 2 + (1.0 - x1) ** 2
          + 90.0 * (x4 - x3 ** 2) ** 2 + (1.0 - x3) ** 2
          + 10.0 * (x2 + x4 - 2.0) ** 2 + 0.1 * (x2 - x4) ** 2)


def _beale(x):
  x1, x2 = x[..., 0], x[..., 1]
  return ((1.5 - x1 + x1 * x2) ** 2 + (2.25 - x1 + x1 * x2 ** 2) ** 2
          + (2.625 - x1 + x1 * x2 ** 3) ** 2)


def _freudenstein_roth(x):
  x1, x2 = x[..., 0], x[..., 1]
  return ((-13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2) ** 2
          + (-29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2) ** 2)


def _box_3d(x):
  t = 0.1 * np.arange(1, 11)
  x1, x2, x3 = x[..., 0:1], x[..., 1:2], x[..., 2:3]
  r = (tf.exp(-t * x1) - tf.exp(-t * x2)
       - x3 * (np.exp(-t) - np.exp(-10.0 * t)))
  return tf.reduce_sum(r ** 2, axis=-1)


def _trigonometric(x):
  n = x.shape[-1]
  i = np.arange(1, n + 1, dtype=np.float64)
  cos = tf.cos(x)
  r = n - tf.reduce_sum(cos, axis=-1, keepdims=True) + i * (1.0 - cos) - tf.sin(x)
  return tf.reduce_sum(r ** 2, axis=-1)


def _variably_dimensioned(x):
  n = x.shape[-1]
  i = np.arange(1, n + 1, dtype=np.float64)
  s = tf.reduce_sum(i * (x - 1.0), axis=-1)
  return tf.reduce_sum((x - 1.0) ** 2, axis=-1) + s ** 2 + s ** 4


def _penalty_one(x):
  return (1e-5 * tf.reduce_sum((x - 1.0) ** 2, axis=-1)
          + (tf.reduce_sum(x ** 2, axis=-1) - 0.25) ** 2)


def _trid(x):
  return (tf.reduce_sum((x - 1.0) ** 2, axis=-1)
          - tf.reduce_sum(x[..., 1:] * x[..., :-1], axis=-1))


def _himmelblau(x):
  x1, x2 = x[..., 0], x[..., 1]
  return (x1 * x1 + x2 - 11.0) ** 2 + (x1 + x2 * x2 - 7.0) ** 2


def _dixon_price(x):
  n = x.shape[-1]
  i = np.arange(2, n + 1, dtype=np.float64)
  return ((x[..., 0] - 1.0) ** 2
          + tf.reduce_sum(i * (2.0 * x[..., 1:] ** 2 - x[..., :-1]) ** 2,
                          axis=-1))


def _extended_powell(x):
  parts = [x[..., i::4] for i in range(4)]
  return tf.reduce_sum(_powell_singular(tf.stack(parts, axis=-1)), axis=-1)


def _tfp_doc_bowl(x):
  scales = np.arange(60, dtype=np.float64) + 1.0
  return tf.reduce_sum(scales * (x - 1.0) ** 2, axis=-1)


PROBLEMS = (
    Problem("rosenbrock_2", _rosenbrock, np.array([-1.2, 1.0]), 0.0, True),
    Problem("rosenbrock_10", _rosenbrock, np.tile([-1.2, 1.0], 5), 0.0, True),
    Problem("helical_valley", _helical_valley, np.array([-1.0, 0.0, 0.0]),
            0.0, True),
    Problem("powell_singular", _powell_singular,
            np.array([3.0, -1.0, 0.0, 1.0]), 0.0, False),
    Problem("wood", _wood, np.array([-3.0, -1.0, -3.0, -1.0]), 0.0, True),
    Problem("beale", _beale, np.array([1.0, 1.0]), 0.0, True),
    Problem("freudenstein_roth", _freudenstein_roth, np.array([0.5, -2.0]),
            None, False),
    Problem("box_3d", _box_3d, np.array([0.0, 10.0, 20.0]), 0.0, False),
    Problem("trigonometric_10", _trigonometric, np.full(10, 0.1), None,
            False),
    Problem("variably_dimensioned_10", _variably_dimensioned,
            1.0 - np.arange(1, 11) / 10.0, 0.0, True),
    Problem("penalty_one_10", _penalty_one, np.arange(1.0, 11.0), None,
            False),
    Problem("trid_6", _trid, np.zeros(6), -50.0, True),
    Problem("himmelblau", _himmelblau, np.array([1.0, 1.0]), 0.0, False),
    Problem("dixon_price_10", _dixon_price, np.ones(10), 0.0, False),
    Problem("extended_powell_8", _extended_powell,
            np.tile([3.0, -1.0, 0.0, 1.0], 2), 0.0, False),
    Problem("tfp_doc_bowl_60", _tfp_doc_bowl, np.arange(60, 0, -1.0), 0.0,
            True),
)
