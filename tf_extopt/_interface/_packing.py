"""Packing optimisation variables to and from one flat float64 vector.

External optimisers (SciPy and friends) work on a single 1-D float64 array.
`VariablePacker` records the structure of a list of variables once (shapes,
sizes, dtypes, offsets into the packed vector) and builds the TensorFlow ops
that read, assign and differentiate through that vector. It also turns
contrib-style ``var_to_bounds`` into packed lower/upper bound arrays.

`resolve_var_list` turns what users pass as ``var_list`` (variables of any
flavour, Keras models and layers, ``tf.Module``s) into a de-duplicated list of
plain ``tf.Variable``s; `variable_constraints` finds the constraints they
carry, and `constraint_box` says which of those are bounds.
"""

import collections.abc

import numpy as np
import tensorflow as tf

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def _describe(obj):
  """A short description of `obj` for error messages."""
  name = getattr(obj, "name", None)
  if isinstance(name, str):
    return "%s %r" % (type(obj).__name__, name)
  return type(obj).__name__


def unwrap_variable(obj):
  """Returns the `tf.Variable` that stores `obj`, or None if it is none.

  Handles plain `tf.Variable`s, tf_keras `AutoCastVariable`s (mixed precision
  wrappers, whose reported dtype changes inside an autocast scope, so the
  storage variable is used instead) and Keras 3 `keras.Variable`s on the
  TensorFlow backend (which keep a `tf.Variable` in `_value`; the public
  `.value` may return an autocast copy, not the variable).

  Args:
    obj: Any object.

  Returns:
    A `tf.Variable` or None.
  """
  if isinstance(obj, tf.Variable):
    inner = getattr(obj, "_variable", None)
    if isinstance(inner, tf.Variable) and type(obj).__name__ == "AutoCastVariable":
      return inner
    return obj
  # Keras 3 (TensorFlow backend) variable.
  inner = getattr(obj, "_value", None)
  if isinstance(inner, tf.Variable):
    return inner
  return None


def _is_module_like(obj):
  return (not isinstance(obj, (tf.Variable, tf.Tensor, str, bytes))
          and unwrap_variable(obj) is None
          and hasattr(obj, "trainable_variables"))


def _walk(var_list, arg_name):
  """Yields `(entry, tf.Variable)` for every variable `var_list` names.

  `entry` is the object the variable was found as (a Keras 3 variable keeps
  its `constraint` there, not on the `tf.Variable` inside). Variables named
  twice are yielded twice.
  """
  if (isinstance(var_list, (list, tuple))
      or (isinstance(var_list, collections.abc.Iterable)
          and not isinstance(var_list, (str, bytes, tf.Tensor, tf.Variable))
          and not _is_module_like(var_list)
          and unwrap_variable(var_list) is None)):
    entries = list(var_list)
  else:
    entries = [var_list]
  for entry in entries:
    if _is_module_like(entry):
      found = list(entry.trainable_variables)
      if not found:
        raise ValueError(
            "`%s` contains %s, which has no trainable variables. Build the "
            "model (call it once or give it an Input) before creating the "
            "optimizer." % (arg_name, _describe(entry)))
    else:
      found = [entry]
    for item in found:
      var = unwrap_variable(item)
      if var is None:
        raise TypeError(
            "`%s` entries must be tf.Variable, keras.Variable, a Keras "
            "Model/Layer or a tf.Module; got %s." % (arg_name, _describe(item)))
      yield item, var


def resolve_var_list(var_list, arg_name="var_list"):
  """Turns a user's ``var_list`` into a de-duplicated list of `tf.Variable`s.

  Args:
    var_list: A variable (any flavour), a Keras `Model`/`Layer` or
      `tf.Module` (meaning its trainable variables), or a list/tuple mixing
      these.
    arg_name: Name of the argument, used in error messages.

  Returns:
    A list of `tf.Variable`s, in order of first appearance, each once.

  Raises:
    ValueError: If an entry is not a variable, model, layer or module, a
      model has no trainable variables (e.g. it is not built yet), or the
      result is empty.
  """
  result = []
  seen = set()
  for _, var in _walk(var_list, arg_name):
    if id(var) not in seen:
      seen.add(id(var))
      result.append(var)
  if not result:
    raise ValueError("`%s` is empty: there is nothing to optimize." % arg_name)
  return result


def variable_constraints(var_list):
  """The constraints the variables of `var_list` carry.

  Keras optimizers apply a variable's `constraint` (Keras 3 and tf_keras
  layers' `kernel_constraint=`, `tf.Variable(constraint=...)`) after each
  step; the interfaces decide what to do with them (see `constraint_box`).

  Args:
    var_list: As `resolve_var_list` takes it.

  Returns:
    A list of `(tf.Variable, constraint)` pairs, each variable once, in
    order of first appearance.
  """
  result = []
  seen = set()
  for entry, var in _walk(var_list, "var_list"):
    constraint = getattr(entry, "constraint", None)
    if constraint is None:
      constraint = getattr(var, "constraint", None)
    if constraint is not None and id(var) not in seen:
      seen.add(id(var))
      result.append((var, constraint))
  return result


def constraint_box(constraint, shape):
  """`(low, high)` when `constraint` keeps each element in an interval.

  Such a constraint is exactly a pair of bounds, which L-BFGS-B (and SciPy's
  bounded methods) honour at every iterate without disturbing the method,
  unlike a projection applied behind the optimizer's back:

  * Keras' `NonNeg`: `[0, inf)`.
  * Keras' `MaxNorm(m)`, and `MinMaxNorm(min_value <= 0, max_value=m)` with
    `rate > 0`, when the norm is taken over single elements (the `axis`
    dimensions all have size 1): `|w| <= m`, i.e. `[-m, m]`. Over larger
    slices they bound a Euclidean norm, which is not a box; with
    `min_value > 0` the set is not even convex; with `rate == 0` they do
    (almost) nothing.

  Args:
    constraint: A variable's `constraint`.
    shape: The variable's shape (a `tf.TensorShape` or list).

  Returns:
    `(low, high)` floats (+/-inf when unbounded), or None when the
    constraint is not such a box (`UnitNorm`, norms over slices, custom
    callables).
  """
  cls = type(constraint)
  if cls.__module__.split(".")[0] not in ("keras", "tf_keras"):
    return None
  name = cls.__name__
  if name == "NonNeg":
    return 0., np.inf
  if name not in ("MaxNorm", "MinMaxNorm"):
    return None
  if name == "MinMaxNorm" and not (constraint.min_value <= 0
                                   and constraint.rate > 0):
    return None
  dims = list(tf.TensorShape(shape).as_list())
  axes = constraint.axis
  axes = [axes] if isinstance(axes, int) else list(axes)
  try:
    slice_size = int(np.prod([dims[a] for a in axes], dtype=np.int64))
  except (IndexError, TypeError):
    return None
  if slice_size != 1:
    return None
  high = float(constraint.max_value)
  return -high, high


# Not merged with `lbfgsb._bound`, which parses `lbfgsb_minimize`'s bounds:
# that one takes Tensors in the solver's dtype, broadcast to a batch
# `[..., n]` with possibly unknown shapes, checks NaN and +/-inf on the wrong
# side with run-time assertions when traced, and raises TypeError for
# non-numbers. This one reads contrib's `var_to_bounds`, one variable at a
# time: NumPy, broadcast to that variable's shape, ValueError naming it.
def _bound_array(bound, default, var, which):
  """One side of a variable's bounds as a flat float64 array."""
  shape = tuple(var.shape.as_list())
  if bound is None:
    return np.full(shape, default, dtype=np.float64).ravel()
  # Object dtype first so that `None` entries inside arrays (contrib allowed
  # e.g. `([None, 2.], None)`) mean "unbounded" rather than failing.
  arr = np.asarray(bound, dtype=object)
  if arr.dtype == object:
    flat = [default if b is None else b for b in arr.ravel()]
    try:
      arr = np.asarray(flat, dtype=np.float64).reshape(arr.shape)
    except (TypeError, ValueError) as e:
      raise ValueError(
          "var_to_bounds: the %s bound of variable %r must be numbers or None; "
          "got %r (%s)." % (which, var.name, bound, e)) from None
  try:
    arr = np.broadcast_to(arr, shape)
  except ValueError:
    raise ValueError(
        "var_to_bounds: the %s bound of variable %r has shape %s, which does "
        "not broadcast to the variable's shape %s." %
        (which, var.name, arr.shape, shape)) from None
  if np.isnan(arr).any():
    raise ValueError("var_to_bounds: the %s bound of variable %r contains NaN."
                     % (which, var.name))
  return np.array(arr, dtype=np.float64).ravel()


class VariablePacker:
  """Records the structure of variables and packs them into one vector.

  The packed vector is the concatenation of every variable, flattened in
  row-major order and cast to float64, in `variables` order.

  Attributes:
    variables: The `tf.Variable`s, in packing order.
    shapes: Their static shapes, as lists of ints.
    sizes: Their numbers of elements.
    dtypes: Their dtypes (float16, bfloat16, float32 or float64).
    size: Length of the packed vector.
  """

  def __init__(self, variables):
    """Records the structure of `variables`.

    Args:
      variables: A list of `tf.Variable`s (see `resolve_var_list`).

    Raises:
      ValueError: If a variable is not floating point or has a shape that is
        not fully defined.
    """
    self.variables = list(variables)
    self.shapes = []
    self.sizes = []
    self.dtypes = []
    for var in self.variables:
      dtype = var.dtype.base_dtype
      if dtype not in _FLOAT_DTYPES:
        raise ValueError(
            "var_list: variable %r has dtype %s; only float16, bfloat16, "
            "float32 and float64 variables can be optimized." %
            (var.name, dtype.name))
      if not var.shape.is_fully_defined():
        raise ValueError(
            "var_list: variable %r has shape %s, which is not fully defined."
            % (var.name, var.shape))
      shape = var.shape.as_list()
      self.shapes.append(shape)
      self.sizes.append(int(np.prod(shape, dtype=np.int64)))
      self.dtypes.append(dtype)
    self.size = int(sum(self.sizes))

  # --- TensorFlow ops (usable in graphs, tf.function and XLA) -------------

  def pack_values(self):
    """Returns the variables' current values packed into a float64 vector."""
    return self.pack_tensors([v.read_value() for v in self.variables])

  def pack_tensors(self, tensors):
    """Packs tensors with the variables' shapes into one float64 vector.

    `None` entries (gradients of variables the loss does not use) become
    zeros, and `tf.IndexedSlices` (gradients of embedding lookups) become
    dense.

    Args:
      tensors: A list with one tensor (or None) per variable.

    Returns:
      A float64 tensor of shape `[size]`.
    """
    parts = []
    for t, shape, size in zip(tensors, self.shapes, self.sizes):
      if t is None:
        parts.append(tf.zeros([size], dtype=tf.float64))
        continue
      if isinstance(t, tf.IndexedSlices):
        t = tf.convert_to_tensor(t)
      parts.append(tf.reshape(tf.cast(t, tf.float64), [size]))
    if not parts:
      return tf.zeros([0], dtype=tf.float64)
    return tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]

  def unpack(self, packed):
    """Splits a packed float64 vector into tensors shaped and typed like the
    variables."""
    packed = tf.convert_to_tensor(packed, dtype=tf.float64)
    pieces = tf.split(packed, self.sizes) if len(self.sizes) > 1 else [packed]
    return [tf.cast(tf.reshape(p, shape), dtype)
            for p, shape, dtype in zip(pieces, self.shapes, self.dtypes)]

  def assign(self, packed):
    """Returns an op assigning a packed float64 vector to the variables.

    In a `tf.function` the assignments are ordered before later reads by
    automatic control dependencies; in a graph, run the returned op first.
    """
    return tf.group(*[v.assign(t, read_value=False)
                      for v, t in zip(self.variables, self.unpack(packed))])

  # --- NumPy side -----------------------------------------------------------

  def split(self, packed):
    """Splits a packed NumPy vector into flat per-variable NumPy pieces."""
    return np.split(np.asarray(packed), np.cumsum(self.sizes)[:-1])

  def packed_bounds(self, var_to_bounds):
    """Packs contrib-style per-variable bounds into two float64 arrays.

    Args:
      var_to_bounds: None, a mapping, or an iterable of `(variable, (low,
        high))` pairs. Keys may be any variable flavour or `variable.ref()`
        (TF2 variables are not hashable, so `.ref()` keys or pairs are how a
        TF2 user writes this). Each bound is None, +/-inf, or anything
        `np.broadcast_to` fits to the variable's shape; None entries inside
        an array mean "unbounded" for that element.

    Returns:
      `(lower, upper)` float64 arrays of shape `[size]` using -inf/+inf for
      "unbounded", or None if `var_to_bounds` is None or empty.

    Raises:
      ValueError: If a key is not one of the optimized variables, a value is
        not a `(low, high)` pair, a bound does not broadcast, or `low > high`
        anywhere.
    """
    if var_to_bounds is None:
      return None
    if isinstance(var_to_bounds, collections.abc.Mapping):
      items = list(var_to_bounds.items())
    else:
      try:
        items = [tuple(item) for item in var_to_bounds]
      except TypeError:
        raise ValueError(
            "var_to_bounds must be a dict {variable: (low, high)} or a list "
            "of (variable, (low, high)) pairs; got %s." %
            type(var_to_bounds).__name__) from None
      if any(len(item) != 2 for item in items):
        raise ValueError(
            "var_to_bounds given as a sequence must hold (variable, (low, "
            "high)) pairs.")
    if not items:
      return None
    index = {id(v): i for i, v in enumerate(self.variables)}
    per_var = {}
    for key, bounds in items:
      deref = key.deref() if hasattr(key, "deref") else key
      var = unwrap_variable(deref)
      if var is None or id(var) not in index:
        raise ValueError(
            "var_to_bounds: key %s is not one of the variables being "
            "optimized (var_list)." % _describe(deref))
      if (isinstance(bounds, (str, bytes))
          or not isinstance(bounds, collections.abc.Sequence)
          or len(bounds) != 2):
        raise ValueError(
            "var_to_bounds: the value for variable %r must be a (low, high) "
            "pair; got %r." % (var.name, bounds))
      per_var[index[id(var)]] = bounds
    lowers, uppers = [], []
    for i, var in enumerate(self.variables):
      low, high = per_var.get(i, (None, None))
      lo = _bound_array(low, -np.inf, var, "lower")
      hi = _bound_array(high, np.inf, var, "upper")
      bad = lo > hi
      if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(
            "var_to_bounds: variable %r has low > high at flat index %d "
            "(%g > %g)." % (var.name, j, lo[j], hi[j]))
      lowers.append(lo)
      uppers.append(hi)
    return np.concatenate(lowers), np.concatenate(uppers)
