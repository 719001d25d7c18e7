"""Objectives shared by several solver test modules (`test_lbfgs`,
`test_tfp_contract`), as batched `value_and_gradients` functions."""

import tensorflow as tf

from tf_extopt import test_problems


def quadratic(minimum, scales):
  return test_problems.value_and_gradients(
      lambda x: tf.reduce_sum(scales * (x - minimum) ** 2, axis=-1))


def skewed_quadratic(minimum, hessian):
  def value(x):
    y = x - minimum
    return tf.reduce_sum(y * tf.linalg.matvec(hessian, y), axis=-1) / 2
  return test_problems.value_and_gradients(value)
