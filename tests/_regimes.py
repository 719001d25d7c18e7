"""One test body for TF2 eager mode and for a TF1 graph session.

The interfaces serve two worlds: eager mode, with loss callables, and graph
mode, with loss Tensors run through a `tf.compat.v1.Session`. A test that
takes the `regime` fixture runs once in each ("eager", "graph") and speaks
a small vocabulary that means the right thing in both:

  x = regime.variable([3., 3.], tf.float64, "x")
  loss = regime.tensor(lambda: tf.reduce_sum(tf.square(x - 1.)))
  result = regime.minimize(ScipyOptimizerInterface(loss, [x]))
  np.testing.assert_allclose(regime.value(x), result.x)

In graph mode the fixture makes a fresh `tf.Graph`, and a session on it,
the defaults for the test; eager execution stays on for the rest of the
process, so other tests are unaffected. TF ops the test body builds go into
that graph: evaluate them with `regime.value`.
"""

import contextlib

import pytest
import tensorflow as tf

REGIMES = ("eager", "graph")


class Regime:
  """Creates, evaluates and minimizes in one regime.

  Every method works whether or not the regime is active (`active()`), so
  a module-scoped regime can hold objects shared by several tests.

  Attributes:
    name: "eager" or "graph".
    graph: The `tf.Graph` in graph mode, else None.
    session: A `tf.compat.v1.Session` on `graph` in graph mode, else None.
  """

  def __init__(self, name, config=None):
    """Makes a regime; in graph mode a fresh graph and a session on it.

    Args:
      name: "eager" or "graph".
      config: Optional `tf.compat.v1.ConfigProto` for the session.
    """
    if name not in REGIMES:
      raise ValueError("regime must be one of %s; got %r." % (REGIMES, name))
    self.name = name
    self.graph = tf.Graph() if name == "graph" else None
    self.session = (tf.compat.v1.Session(graph=self.graph, config=config)
                    if self.graph is not None else None)

  def __repr__(self):
    return "Regime(%r)" % self.name

  @property
  def graph_mode(self):
    return self.graph is not None

  @contextlib.contextmanager
  def active(self):
    """Makes the graph and the session the defaults (eager: no-op)."""
    if not self.graph_mode:
      yield self
      return
    with self.graph.as_default(), self.session.as_default():
      yield self

  def _building(self):
    return (self.graph.as_default() if self.graph_mode
            else contextlib.nullcontext())

  def variable(self, value, dtype=None, name=None, **kwargs):
    """A variable holding `value`, already initialized in graph mode."""
    if not self.graph_mode:
      return tf.Variable(value, dtype=dtype, name=name, **kwargs)
    with self.graph.as_default():
      var = tf.compat.v1.Variable(value, dtype=dtype, name=name, **kwargs)
    self.session.run(var.initializer)
    return var

  def tensor(self, fn):
    """A loss, constraint or fetch: `fn` itself in eager mode (called at
    each evaluation), the Tensor `fn()` builds (once) in graph mode."""
    if not self.graph_mode:
      return fn
    with self.graph.as_default():
      return fn()

  def minimize(self, optimizer, **kwargs):
    """`optimizer.minimize(**kwargs)`, with the session in graph mode."""
    if self.graph_mode:
      kwargs["session"] = self.session
    return optimizer.minimize(**kwargs)

  def value(self, values):
    """NumPy value of a variable or Tensor, or a nested structure of them."""
    if self.graph_mode:
      return self.session.run(values)
    return tf.nest.map_structure(lambda t: t.numpy(), values)

  def assign(self, var, value):
    """Sets `var` to `value`."""
    with self._building():
      op = var.assign(value)
    if self.graph_mode:
      self.session.run(op)

  def close(self):
    if self.session is not None:
      self.session.close()


def without_grappler():
  """A session config that skips Grappler's rewrites of the graph.

  Grappler rewrites a graph on its first run; for a whole L-BFGS solve in
  a graph (thousands of ops) that costs a good part of a second, a few
  seconds with bounds, and the rewrites must not change results anyway.
  """
  config = tf.compat.v1.ConfigProto()
  config.graph_options.rewrite_options.disable_meta_optimizer = True
  return config


def regime_fixture(config=None):
  """Makes a `regime` fixture: a fresh `Regime` per test, active throughout.

  Args:
    config: Optional `tf.compat.v1.ConfigProto` for graph-mode sessions.

  Returns:
    The fixture, parametrized over `REGIMES`; assign it to `regime` in a
    test module (or import `regime` for the default session config).
  """

  @pytest.fixture(params=REGIMES, name="regime")
  def fixture(request):
    fresh = Regime(request.param, config)
    try:
      with fresh.active():
        yield fresh
    finally:
      fresh.close()

  return fixture


regime = regime_fixture()
