"""The result namedtuple shared by the L-BFGS solvers, and stopping rules."""

import collections

import tensorflow as tf

__all__ = ["LBfgsOptimizerResults", "converged_all", "converged_any"]

LBfgsOptimizerResults = collections.namedtuple(
    "LBfgsOptimizerResults",
    [
        "converged",
        "failed",
        "num_iterations",
        "num_objective_evaluations",
        "position",
        "objective_value",
        "objective_gradient",
        "position_deltas",
        "gradient_deltas",
    ])
LBfgsOptimizerResults.__doc__ = """Results of `lbfgs_minimize` / `lbfgsb_minimize`.

The fields and their order are those of `tfp.optimizer.lbfgs_minimize`'s
result, so code written against TFP reads these unchanged.

Attributes:
  converged: `bool` Tensor of shape `[...]`: the member met a stopping
    tolerance (or reached a value of -inf).
  failed: `bool` Tensor of shape `[...]`: the member's start was not finite,
    or even a steepest-descent line search could not decrease the objective.
    A member that stopped on `max_iterations` has both flags false.
  num_iterations: scalar `int32`, the most iterations any member took
    (cumulative across warm starts).
  num_objective_evaluations: scalar `int32`, the number of (batched) calls to
    `value_and_gradients_function` (cumulative across warm starts).
  position: `[..., n]`, the last accepted point of each member. Always finite.
  objective_value: `[...]`, the objective at `position`.
  objective_gradient: `[..., n]`, the gradient at `position`.
  position_deltas: `[num_correction_pairs, ..., n]`, the stored `s_k` pairs,
    oldest first, zero-padded in front while fewer pairs are held.
  gradient_deltas: `[num_correction_pairs, ..., n]`, the matching `y_k`.

Saving and resuming: the fields are the solver's whole state, so results
saved and loaded with `tf.train.Checkpoint` (one variable per field) and
passed back as `previous_optimizer_results` continue the run on the steps
it would have taken (`max_iterations` counts the iterations made before):

```python
saved = tf.train.Checkpoint(
    **{k: tf.Variable(v) for k, v in results._asdict().items()})
path = saved.write(prefix)
# Later, possibly in another process; `template`: results of the same
# shapes (a call with max_iterations=0, say).
loaded = tf.train.Checkpoint(
    **{k: tf.Variable(tf.zeros_like(v)) for k, v in template._asdict().items()})
loaded.read(path).assert_consumed()
previous = LBfgsOptimizerResults(**{
    k: getattr(loaded, k).read_value() for k in LBfgsOptimizerResults._fields})
results = lbfgs_minimize(fn, None, previous_optimizer_results=previous,
                         max_iterations=1000)
```

`LbfgsOptimizerInterface` keeps these results between its chunks and saves
them with `tf.train.Checkpoint` itself (see its `state`).
"""


def converged_all(converged, failed):
  """Stops when every batch member has converged or failed."""
  return tf.reduce_all(converged | failed)


def converged_any(converged, failed):
  """Stops when any member has converged, or when all have failed."""
  return tf.reduce_any(converged) | tf.reduce_all(failed)
