"""Shared problems and references for the ScipyOptimizerInterface tests."""

import contextlib

import numpy as np
import scipy.optimize
import tensorflow as tf

from tf_extopt import ExternalOptimizerInterface

# Contrib's method matrix: (method, options, atol to SciPy's own result,
# atol to the optimum (ones), dimension). The problem is in float64, so the
# trajectory matches SciPy's run on `scipy.optimize.rosen` up to rounding.
# COBYLA (pure-Python PRIMA in SciPy >= 1.16, ~1 ms per evaluation) crawls
# along Rosenbrock's valley, so it gets a fixed budget and is checked mainly
# against SciPy's own run with the same budget.
METHOD_CASES = [
    ("L-BFGS-B", {}, 1e-6, 1e-4, 5),
    ("Nelder-Mead", {"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20000,
                     "maxfev": 20000, "adaptive": True}, 1e-6, 1e-6, 5),
    ("Newton-CG", {"xtol": 1e-10}, 1e-6, 1e-5, 5),
    ("TNC", {"gtol": 1e-10, "maxfun": 2000}, 1e-5, 1e-4, 5),
    ("COBYLA", {"rhobeg": 0.5, "maxiter": 200}, 1e-6, 0.7, 2),
    ("SLSQP", {"ftol": 1e-14, "maxiter": 500}, 1e-6, 1e-5, 5),
    ("CG", {"gtol": 1e-8}, 1e-6, 1e-5, 5),
    ("Powell", {"xtol": 1e-6, "ftol": 1e-12}, 1e-6, 1e-6, 5),
    ("BFGS", {"gtol": 1e-8}, 1e-6, 1e-5, 5),
]

METHOD_IDS = [case[0] for case in METHOD_CASES]


def rosen_tf(x):
  """Rosenbrock in TF, same formula as `scipy.optimize.rosen`."""
  return tf.reduce_sum(100.0 * tf.square(x[1:] - tf.square(x[:-1]))
                       + tf.square(1.0 - x[:-1]))


def scipy_reference(method, options, dimension):
  """SciPy run directly on the same Rosenbrock problem from zeros."""
  gradient_free = method in ("Nelder-Mead", "Powell", "COBYLA")
  return scipy.optimize.minimize(
      scipy.optimize.rosen, np.zeros(dimension), method=method,
      jac=None if gradient_free else scipy.optimize.rosen_der,
      options=dict(options))


@contextlib.contextmanager
def graph_session():
  """A fresh graph and a v1 Session on it, without disabling eager globally
  (other test files share the pytest process)."""
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.Session(graph=graph) as session:
      yield graph, session


class CountingLoss:
  """Wraps a loss callable and counts how often it is traced/called."""

  def __init__(self, fn):
    self.fn = fn
    self.calls = 0

  def __call__(self):
    self.calls += 1
    return self.fn()


def rosen_values(regime, points):
  """`rosen_tf` at each packed point, as NumPy values (through `regime`)."""
  return regime.value([rosen_tf(tf.constant(p)) for p in points])


class MockOptimizerInterface(ExternalOptimizerInterface):
  """Contrib's mock subclass: declares only some arguments plus **kwargs.

  Minimizes `(x - x0)**2 / 2` in one step, after a fixed number of loss and
  step callbacks, so tests can check unpacking and callback counts.
  """

  NUM_STEP_CALLS = 5
  NUM_LOSS_CALLS = 2

  def _minimize(self, initial_val, loss_grad_func, step_callback,
                optimizer_kwargs, **unused_kwargs):
    for _ in range(self.NUM_LOSS_CALLS):
      loss_grad_func(initial_val)
    for _ in range(self.NUM_STEP_CALLS):
      step_callback(initial_val)
    _, grad = loss_grad_func(initial_val)
    return initial_val - grad


class StrictSubsetInterface(ExternalOptimizerInterface):
  """Declares a subset of the arguments and no **kwargs."""

  def _minimize(self, initial_val, loss_grad_func):
    _, grad = loss_grad_func(initial_val)
    return initial_val - grad
