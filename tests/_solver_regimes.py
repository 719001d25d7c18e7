"""The execution regimes of the solver tests, as TFP's tests have them.

A test that takes the `solver_regime` fixture runs eagerly, inside
`tf.function` and under `jit_compile=True`; `run(regime, fn, *args)` does
the wrapping and returns NumPy values. `run` also knows "session" (a TF1
graph run by a `tf.compat.v1.Session`), for tests that parametrize
`solver_regime` themselves. (Named apart from `tests/_regimes.py`'s `regime`
fixture, an interface `Regime`: eager mode or a TF1 graph session.)
Errors `fn` raises while being traced propagate as they are, so error tests
run in every regime too.
"""

import pytest
import tensorflow as tf

REGIMES = ("eager", "function", "xla")


@pytest.fixture(params=REGIMES)
def solver_regime(request):
  """The execution regime of a test: eager, tf.function or XLA."""
  return request.param


def in_regime(regime, fn):  # pylint: disable=redefined-outer-name
  """`fn` as it runs in `regime`: itself, or in a tf.function (with XLA)."""
  if regime == "eager":
    return fn
  return tf.function(fn, jit_compile=regime == "xla")


def to_numpy(results):
  return tf.nest.map_structure(lambda t: t.numpy(), results)


def run(regime, fn, *args):  # pylint: disable=redefined-outer-name
  """Calls `fn(*args)` in `regime` (nests of arrays become tensors).

  Returns NumPy values.
  """
  if regime == "session":
    graph = tf.Graph()
    with graph.as_default():
      outputs = fn(*tf.nest.map_structure(tf.constant, args))
      with tf.compat.v1.Session(graph=graph) as session:
        return session.run(outputs)
  args = tf.nest.map_structure(tf.convert_to_tensor, args)
  return to_numpy(in_regime(regime, fn)(*args))
