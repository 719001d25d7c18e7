"""Evaluating loss, gradient and constraints at a packed point: the protocol.

Two evaluators share one interface so the optimizer classes do not branch on
the execution mode:

* `_graph_evaluator.GraphEvaluator` (TF1 graphs and `tf.compat.v1.Session`s):
  every op is built once, at construction; evaluating runs the session.
* `_eager_evaluator.EagerEvaluator` (TF2): loss and gradient are compiled
  once into a `tf.function` with a fixed `input_signature`, so they never
  retrace; with a `tf.distribute` strategy, each evaluation runs on every
  replica (see `_distribute`).

Both take a packed float64 point, assign it to the variables and return
NumPy values. `bind(session, feed_dict, fetches, run_kwargs)` checks the
per-call arguments and returns the object that `minimize` evaluates through
(`_GraphRun` or `_EagerRun`), with these methods:

* `value_and_grad(x) -> (out, fetched)`: `out[0]` is the loss and `out[1:]`
  the packed gradient, one float64 array (one device-to-host copy);
* `value(x) -> (loss, fetched)` for gradient-free methods;
* `constraints(kind, x) -> (values [m], jacobian [m, n])`, kind 'eq'/'ineq';
* `fetch(x) -> fetched` (assigns `x`);
* `read() -> x`, `assign(x)`.

On-device optimizers build their solver through the evaluator too, so they
need not know the mode either: `value_and_gradient_tf(x)` is the TF-level
loss and packed gradient, `compile(fn, input_signature, name)` turns a
TF-level function into `call(run, *args) -> NumPy outputs` (ops fed by
placeholders and run by the session in graph mode; a concrete function
eagerly), and `scope()` is where to create the variables such functions
use. `compiles_on_first_call` says whether `compile` defers its work to
the first call (eager: a function that is never called costs nothing) or
builds the ops at once (graph mode).

This module holds what both evaluators share: the loss check, the
"depends on no variable" check and the `fetches` check.
"""

import typing

import numpy as np
import tensorflow as tf


class BoundRun(typing.Protocol):
  """What `bind` returns: one `minimize` call's evaluations (NumPy in, out).

  This is all `_run` and the interfaces use of it; `_GraphRun` and
  `_EagerRun` implement it.
  """

  fetches: list  # The checked `fetches` of this call.

  def value_and_grad(self, x: np.ndarray) -> typing.Tuple[np.ndarray, list]:
    """`(out, fetched)`: `out[0]` the loss, `out[1:]` the packed gradient."""

  def value(self, x: np.ndarray) -> typing.Tuple[float, list]:
    """`(loss, fetched)`, no gradient (gradient-free methods)."""

  def constraints(self, kind: str, x: np.ndarray
                  ) -> typing.Tuple[np.ndarray, np.ndarray]:
    """`(values [m], jacobian [m, n])` of the `kind` ('eq'/'ineq') ones."""

  def fetch(self, x: np.ndarray) -> list:
    """Assigns `x`; returns the `fetches` evaluated there."""

  def read(self) -> np.ndarray:
    """The variables' current values, packed (float64)."""

  def assign(self, x: np.ndarray) -> None:
    """Assigns the packed point `x` to the variables."""


class Evaluator(typing.Protocol):
  """What `_problem.Problem.evaluator` is: `GraphEvaluator`/`EagerEvaluator`.

  `minimize` uses `bind`; on-device optimizers (`lbfgs_interface`) also
  build their solver through `value_and_gradient_tf`, `compile` and `scope`.
  """

  packer: typing.Any  # The `_packing.VariablePacker` of the variables.
  # Whether `compile` defers its work to the first call (eager) or builds
  # the ops at once (graph mode).
  compiles_on_first_call: bool

  def bind(self, session, feed_dict, fetches, run_kwargs) -> BoundRun:
    """Checks one call's arguments; returns its `BoundRun`."""

  def value_and_gradient_tf(self, x: tf.Tensor, observe=None
                            ) -> typing.Tuple[tf.Tensor, tf.Tensor]:
    """TF-level float64 `(loss, packed_gradient)` at packed `x`."""

  def scope(self) -> typing.ContextManager:
    """Where to create state (variables) for compiled functions."""

  def compile(self, fn, input_signature, name, jit_compile=None
              ) -> typing.Callable:
    """`fn` as `call(run, *args) -> NumPy outputs`."""


def as_scalar_loss(loss, what="loss"):
  """Checks that `loss` is a real scalar and casts it to float64."""
  loss = tf.convert_to_tensor(loss)
  if not (loss.dtype.is_floating or loss.dtype.is_integer):
    raise TypeError("%s must be a real scalar; got dtype %s." %
                    (what, loss.dtype.name))
  if loss.shape.rank is not None and loss.shape.num_elements() != 1:
    raise ValueError("%s must be a scalar; got shape %s." % (what, loss.shape))
  return tf.reshape(tf.cast(loss, tf.float64), [])


def check_depends(gradients):
  """Raises when no variable reaches the loss (every gradient is None).

  Minimizing such a loss would "converge" at once at the start point, a
  success that means nothing; the usual cause is a loss that reads other
  variables (or a copy of the model) than `var_list`. Variables that do not
  reach the loss while others do are allowed: their gradient is zero.
  """
  if all(g is None for g in gradients):
    raise ValueError(
        "loss does not depend on any variable in var_list (every gradient is "
        "None): check that the loss reads the variables, model or layers "
        "passed as var_list, not copies of them.")


def fetch_list(fetches):
  """Checks that `fetches` is None or a list/tuple; returns a new list."""
  if fetches is None:
    return []
  if not isinstance(fetches, (list, tuple)):
    raise TypeError("fetches must be a list of values to pass to "
                    "loss_callback; got %s." % type(fetches).__name__)
  return list(fetches)
