"""Argument checks shared by the solvers.

Each check raises at trace time when the offending value is static, with a
message naming the argument, what was expected and what was given. Values
only known at run time get a `tf.debugging` assertion instead (returned so the
caller can make the computation depend on it).
"""

import numbers

import numpy as np
import tensorflow as tf

from tf_extopt._results import LBfgsOptimizerResults

__all__ = ["position", "callable_or_none", "bool_or_none", "positive_int",
           "non_negative", "positive_diagonal", "previous_results"]

_SOLVER_DTYPES = (tf.float32, tf.float64)


def _type_name(value):
  """`module.QualName` of `value`'s type, to tell look-alike types apart."""
  cls = type(value)
  module = cls.__module__
  name = cls.__qualname__
  return name if module == "builtins" else f"{module}.{name}"


def position(value, name):
  """Converts a starting position, which must be a floating `[..., n]`."""
  if value is None:
    raise ValueError(f"`{name}` must be a Tensor of shape [..., n]; got None.")
  dtype = getattr(value, "dtype", None)
  if dtype is not None:
    dtype = tf.as_dtype(dtype)
  else:
    dtype = tf.as_dtype(np.asarray(value).dtype)
  if dtype not in _SOLVER_DTYPES:
    raise TypeError(
        f"`{name}` must have a floating dtype the solvers support (float32 "
        f"or float64); got {dtype.name}. Cast it first, e.g. "
        "tf.cast(x, tf.float64).")
  tensor = tf.convert_to_tensor(value, dtype=dtype, name=name)
  if tensor.shape.rank is not None and tensor.shape.rank < 1:
    raise ValueError(
        f"`{name}` must have shape [..., n] with rank >= 1; got a scalar.")
  return tensor


def bool_or_none(value, name):
  if value is not None and not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be None (automatic), True or False; got "
                    f"{value!r} ({type(value).__name__}).")
  return None if value is None else bool(value)


def callable_or_none(value, name):
  if value is not None and not callable(value):
    raise TypeError(f"`{name}` must be callable or None; got "
                    f"{type(value).__name__}.")
  return value


def positive_int(value, name, minimum=1):
  """A static Python integer `>= minimum`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    static = tf.get_static_value(value) if tf.is_tensor(value) else None
    if static is None or np.ndim(static) or not np.issubdtype(
        np.asarray(static).dtype, np.integer):
      raise TypeError(f"`{name}` must be a Python integer >= {minimum}; got "
                      f"{value!r}.")
    value = int(static)
  if value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
  return int(value)


def _check_number(value, name, dtype):
  """Raises a `TypeError` naming `name` unless `value` is a number of `dtype`'s
  kind (an integer for integer dtypes, any real number otherwise)."""
  integer = dtype.is_integer
  if tf.is_tensor(value) or isinstance(value, (np.ndarray, np.generic)):
    try:
      given = tf.as_dtype(value.dtype)
      ok = given.is_integer or (not integer and given.is_floating)
    except TypeError:
      ok = False
  else:
    ok = (isinstance(value, numbers.Integral if integer else numbers.Real)
          and not isinstance(value, bool))
  if not ok:
    kind = "an integer" if integer else "a real number"
    raise TypeError(f"`{name}` must be {kind} >= 0 (a Python number or a "
                    f"scalar Tensor); got {value!r} ({_type_name(value)}).")


def non_negative(value, name, dtype):
  """Converts a scalar to `dtype`; checks it is >= 0.

  Returns:
    `(tensor, assertions)` where `assertions` is a list of ops (empty when
    the value was checked statically).

  Raises:
    TypeError: `value` is not a number (an integer when `dtype` is one).
    ValueError: `value` is not a scalar, or is statically negative.
  """
  _check_number(value, name, tf.as_dtype(dtype))
  tensor = tf.convert_to_tensor(value, dtype=dtype, name=name)
  if tensor.shape.rank not in (None, 0):
    raise ValueError(f"`{name}` must be a scalar; got shape {tensor.shape}.")
  static = tf.get_static_value(tensor)
  if static is not None:
    if not static >= 0:
      raise ValueError(f"`{name}` must be non-negative; got {static}.")
    return tensor, []
  return tensor, [tf.debugging.assert_non_negative(
      tensor, message=f"`{name}` must be non-negative")]


def positive_diagonal(value, name, position_tensor):
  """Broadcasts a positive diagonal to the position's shape.

  Returns:
    `(tensor shaped like position_tensor, assertions)`.
  """
  dtype = position_tensor.dtype
  try:
    tensor = tf.convert_to_tensor(value, dtype=dtype, name=name)
  except (TypeError, ValueError) as error:
    raise TypeError(
        f"`{name}` must be a positive {dtype.name} Tensor broadcastable to "
        f"the position's shape [..., n]; got {value!r} ({error}).") from None
  if (tensor.shape.is_fully_defined()
      and position_tensor.shape.is_fully_defined()):
    try:
      ok = (np.broadcast_shapes(tuple(tensor.shape),
                                tuple(position_tensor.shape))
            == tuple(position_tensor.shape))
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(
          f"`{name}` of shape {tensor.shape} does not broadcast to the "
          f"position's shape {position_tensor.shape}.")
  static = tf.get_static_value(tensor)
  assertions = []
  if static is not None:
    if not np.all(static > 0) or not np.all(np.isfinite(static)):
      raise ValueError(
          f"`{name}` must be positive and finite everywhere (it is the "
          f"diagonal of the initial inverse Hessian); got {static}.")
  else:
    assertions.append(tf.debugging.assert_positive(
        tensor, message=f"`{name}` must be positive"))
  return tf.broadcast_to(tensor, tf.shape(position_tensor)), assertions


def previous_results(value, name):
  """Accepts `LBfgsOptimizerResults` or any namedtuple with its fields.

  TFP's `LBfgsOptimizerResults` is a different class with the same fields,
  so a run can resume from TFP's results.
  """
  fields = LBfgsOptimizerResults._fields  # pylint: disable=no-member,protected-access
  if isinstance(value, LBfgsOptimizerResults):
    return value
  given = getattr(value, "_fields", None)
  if isinstance(value, tuple) and given is not None and set(fields) <= set(
      given):
    return LBfgsOptimizerResults(**{f: getattr(value, f) for f in fields})
  raise TypeError(
      f"`{name}` must be an LBfgsOptimizerResults returned by a previous call "
      f"(or a namedtuple with its fields, such as TFP's: {', '.join(fields)});"
      f" got {_type_name(value)}.")
