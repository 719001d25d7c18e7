"""Convergence and non-finite checks shared by the L-BFGS solvers."""

import tensorflow as tf

__all__ = ["sup_norm", "is_finite_point", "is_minus_inf", "step_converged"]


def sup_norm(x):
  """Max-norm over the last axis."""
  return tf.reduce_max(tf.abs(x), axis=-1)


def is_finite_point(value, gradient):
  """`[B]` bool: the value and every gradient component are finite."""
  return tf.math.is_finite(value) & tf.reduce_all(
      tf.math.is_finite(gradient), axis=-1)


def is_minus_inf(value):
  """`[B]` bool: the value is -inf, a minimum for our purposes (as in TFP)."""
  return tf.equal(value, tf.constant(float("-inf"), value.dtype))


def step_converged(previous_position, position, previous_value, value,
                   stationarity, tolerance, x_tolerance, f_relative_tolerance,
                   f_absolute_tolerance):
  """Applies the stopping tests to an accepted step.

  A member has converged when any of these hold::

    stationarity                       <= tolerance
    max_i |x_{k+1} - x_k|_i            <= x_tolerance
    |f_{k+1} - f_k|                    <= f_relative_tolerance * |f_k|
    |f_{k+1} - f_k|                    <= f_absolute_tolerance
    f_{k+1} == -inf

  `stationarity` is the sup-norm of the gradient (L-BFGS) or of the projected
  gradient (L-BFGS-B). Unlike TFP, the relative test uses `|f_k|`, so it also
  works for negative objectives (TFP's never fires for them).

  Returns:
    `[B]` bool.
  """
  change = tf.abs(value - previous_value)
  return ((stationarity <= tolerance)
          | (sup_norm(position - previous_position) <= x_tolerance)
          | (change <= f_relative_tolerance * tf.abs(previous_value))
          | (change <= f_absolute_tolerance)
          | is_minus_inf(value))
