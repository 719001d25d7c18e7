"""Fixed-shape limited memory of correction pairs, one ring buffer per member.

Each batch member keeps up to ``m`` pairs ``(s_k, y_k) = (x_{k+1} - x_k,
g_{k+1} - g_k)`` in slots of a ``[B, m, n]`` tensor. Members update at
different loop trips, so each has its own write position (``head``) and pair
count. Writes are masked selects into the fixed-shape buffers, so the loop
state never changes shape and XLA compiles it; nothing is concatenated or
shifted. The chronological order of member ``b`` is slots
``(head_b - count_b + j) mod m`` for ``j = 0 .. count_b - 1`` (oldest first).

The public TFP-compatible layout, produced by `to_deltas` and read back by
`from_deltas`, is ``[m, ..., n]`` oldest first with zero pairs in front.
"""

import collections

import tensorflow as tf

__all__ = ["Memory", "empty", "push", "reset", "chronological", "to_deltas",
           "from_deltas", "two_loop_direction"]

Memory = collections.namedtuple(
    "Memory",
    [
        "s",      # [B, m, n] position deltas, ring-ordered.
        "y",      # [B, m, n] gradient deltas, ring-ordered.
        "rho",    # [B, m] 1 / (s . y), zero for unused slots.
        "head",   # [B] int32 slot the next pair is written to.
        "count",  # [B] int32 number of valid pairs (<= m).
    ])


def empty(batch_size, num_pairs, n, dtype):
  """Returns a `Memory` with no pairs for `batch_size` members."""
  zeros = tf.zeros(tf.stack([batch_size, num_pairs, n]), dtype=dtype)
  ints = tf.zeros(tf.reshape(batch_size, [1]), dtype=tf.int32)
  return Memory(s=zeros, y=zeros,
                rho=tf.zeros(tf.stack([batch_size, num_pairs]), dtype=dtype),
                head=ints, count=ints)


def push(memory, s, y, where):
  """Stores `(s, y)` for the members where `where` is true."""
  num_pairs = memory.s.shape[1]
  slot = tf.one_hot(memory.head, num_pairs, on_value=True, off_value=False)
  write = slot & where[:, None]
  sy = tf.reduce_sum(s * y, axis=-1)
  rho = tf.math.divide_no_nan(tf.ones_like(sy), sy)
  return Memory(
      s=tf.where(write[..., None], s[:, None, :], memory.s),
      y=tf.where(write[..., None], y[:, None, :], memory.y),
      rho=tf.where(write, rho[:, None], memory.rho),
      head=tf.where(where, (memory.head + 1) % num_pairs, memory.head),
      count=tf.where(where, tf.minimum(memory.count + 1, num_pairs),
                     memory.count))


def reset(memory, where):
  """Forgets every pair of the members where `where` is true."""
  return memory._replace(
      count=tf.where(where, tf.zeros_like(memory.count), memory.count))


def chronological(memory):
  """Returns `(s, y, valid)` as `[B, m, n]`, `[B, m, n]`, `[B, m]`.

  Pairs are oldest first and right-aligned: position `p` holds a pair when
  `p >= m - count`, and zeros otherwise (the TFP layout).
  """
  num_pairs = memory.s.shape[1]
  positions = tf.range(num_pairs, dtype=tf.int32)
  slots = (memory.head[:, None] + positions[None, :]) % num_pairs
  valid = positions[None, :] >= (num_pairs - memory.count)[:, None]
  mask = tf.cast(valid, memory.s.dtype)[..., None]
  s = tf.gather(memory.s, slots, batch_dims=1) * mask
  y = tf.gather(memory.y, slots, batch_dims=1) * mask
  return s, y, valid


def to_deltas(memory, position_shape):
  """Returns `(position_deltas, gradient_deltas)` shaped `[m, ..., n]`."""
  s, y, _ = chronological(memory)
  shape = tf.concat([[memory.s.shape[1]], position_shape], axis=0)
  s = tf.reshape(tf.transpose(s, [1, 0, 2]), shape)
  y = tf.reshape(tf.transpose(y, [1, 0, 2]), shape)
  return s, y


def from_deltas(position_deltas, gradient_deltas, batch_size, n):
  """Rebuilds a `Memory` from TFP-layout deltas `[m, ..., n]`.

  The pairs from the first one with positive curvature `s . y > 0` to the
  newest are kept, so both this package's results and TFP's (which pad with
  zero pairs) resume with the memory they ended with.
  """
  num_pairs = position_deltas.shape[0]
  s = tf.transpose(tf.reshape(position_deltas, tf.stack([num_pairs, batch_size,
                                                         n])), [1, 0, 2])
  y = tf.transpose(tf.reshape(gradient_deltas, tf.stack([num_pairs, batch_size,
                                                         n])), [1, 0, 2])
  sy = tf.reduce_sum(s * y, axis=-1)
  usable = sy > 0
  # Index of the first usable pair; num_pairs when there is none.
  positions = tf.range(num_pairs, dtype=tf.int32)
  first = tf.reduce_min(
      tf.where(usable, positions[None, :], num_pairs), axis=-1)
  count = num_pairs - first
  rho = tf.where(usable, tf.math.divide_no_nan(tf.ones_like(sy), sy),
                 tf.zeros_like(sy))
  return Memory(s=s, y=y, rho=rho, head=tf.zeros_like(count), count=count)


def two_loop_direction(memory, gradient, initial_inverse_hessian=None):
  """Returns the L-BFGS search direction `-H_k g` by the two-loop recursion.

  Algorithm 7.4 of Nocedal & Wright (2006), per member, newest pair first::

    q = g
    for i = k-1, ..., k-m:            # newest to oldest
      alpha_i = rho_i s_i.q ;  q = q - alpha_i y_i
    r = H0 q                          # H0 = gamma I, gamma = s.y / y.y newest
    for i = k-m, ..., k-1:            # oldest to newest
      beta = rho_i y_i.r ;  r = r + s_i (alpha_i - beta)
    return -r

  Notation: `s_i` <-> `position_deltas`, `y_i` <-> `gradient_deltas`,
  `rho_i = 1 / (s_i . y_i)`. The loops are unrolled over the `m` slots (a
  static number) with unused slots masked to no-ops, so members holding
  different numbers of pairs share one computation.

  Args:
    memory: `Memory`.
    gradient: `[B, n]`.
    initial_inverse_hessian: optional `[B, n]` (or broadcastable) positive
      diagonal `H0`. When absent, `H0 = gamma I` with the usual scaling from
      the newest pair, and `I` when there is no pair.

  Returns:
    `[B, n]` direction.
  """
  num_pairs = memory.s.shape[1]
  q = gradient
  pairs = []
  for i in range(num_pairs):
    slot = (memory.head - 1 - i) % num_pairs
    s_i = tf.gather(memory.s, slot, batch_dims=1)
    y_i = tf.gather(memory.y, slot, batch_dims=1)
    rho_i = tf.gather(memory.rho, slot, batch_dims=1)
    rho_i = tf.where(i < memory.count, rho_i, tf.zeros_like(rho_i))
    alpha_i = rho_i * tf.reduce_sum(s_i * q, axis=-1)
    q = q - alpha_i[:, None] * y_i
    pairs.append((s_i, y_i, rho_i, alpha_i))
  if initial_inverse_hessian is None:
    s_new, y_new, _, _ = pairs[0]
    gamma = tf.math.divide_no_nan(tf.reduce_sum(s_new * y_new, axis=-1),
                                  tf.reduce_sum(y_new * y_new, axis=-1))
    gamma = tf.where(memory.count > 0, gamma, tf.ones_like(gamma))
    r = gamma[:, None] * q
  else:
    r = initial_inverse_hessian * q
  for s_i, y_i, rho_i, alpha_i in reversed(pairs):
    beta = rho_i * tf.reduce_sum(y_i * r, axis=-1)
    r = r + s_i * (alpha_i - beta)[:, None]
  return -r
