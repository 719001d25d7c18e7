"""Fixed-shape limited memory of correction pairs, and the two-loop recursion.

The pairs ``(s_k, y_k) = (x_{k+1} - x_k, g_{k+1} - g_k)`` of every member live
in ``[m, n, B]`` tensors, pair-major and batch-minor, oldest first and
right-aligned: member ``b`` holds ``count[b]`` pairs in positions
``m - count[b] .. m - 1``. Results convert to TFP's ``position_deltas``
layout ``[m, ..., n]`` with one transpose.

Batch-minor because every operation on the memory is either elementwise or a
dot product over ``n``: with the batch in the minor dimension the dot
products reduce across rows and vectorise over members, and the per-member
masks broadcast along rows. Measured in isolation, the push and the
two-loop recursion are both faster than with ``[m, B, n]``, under XLA and
in plain graphs alike (docs/design.md, "The memory").

A member that stores a pair moves its own column down by one position and
writes the new pair last. That is one masked select over the buffer, which XLA
fuses into a single pass; the shapes never change, so the loop compiles. A
per-member ring buffer avoids the shift but must be put in order for each
two-loop recursion, and every way of doing that (per-member gathers,
permutation matmuls, a barrel shifter of rolls, scatter-and-gather) was
no faster, or much slower, on CPU.
"""

import collections

import tensorflow as tf

from tf_extopt._solver import _context

__all__ = ["Memory", "empty", "push", "written_where", "reset", "select",
           "to_deltas", "from_deltas", "direction", "chronological"]

Memory = collections.namedtuple(
    "Memory",
    [
        "s",      # [m, n, B] position deltas, oldest first, right-aligned.
        "y",      # [m, n, B] gradient deltas.
        "rho",    # [m, B] 1 / (s . y) for held pairs, 0 elsewhere.
        "count",  # [B] int32 number of pairs held (<= m).
    ])


def empty(batch_size, num_pairs, n, dtype):
  """Returns a `Memory` with no pairs for `batch_size` members."""
  zeros = tf.zeros(tf.stack([num_pairs, n, batch_size]), dtype=dtype)
  return Memory(s=zeros, y=zeros,
                rho=tf.zeros(tf.stack([num_pairs, batch_size]), dtype=dtype),
                count=tf.zeros(tf.reshape(batch_size, [1]), dtype=tf.int32))


def push(memory, s, y, where, conditional=None):
  """Appends `(s, y)` (each `[B, n]`) for the members where `where` is true.

  `conditional` puts the shift behind a `tf.cond` on `any(where)`; None
  (the solver's choice) does so under XLA only (see `written_where`).
  """
  num_pairs = memory.s.shape[0]
  s = tf.transpose(s)
  y = tf.transpose(y)
  sy = tf.reduce_sum(s * y, axis=0)
  rho = tf.math.divide_no_nan(tf.ones_like(sy), sy)

  def shifted(buffer, new):
    return tf.where(where, tf.concat([buffer[1:], new[None]], axis=0), buffer)

  def pushed():
    return (shifted(memory.s, s), shifted(memory.y, y),
            shifted(memory.rho, rho))

  new_s, new_y, new_rho = written_where(
      where, pushed, (memory.s, memory.y, memory.rho), conditional)
  return Memory(
      s=new_s, y=new_y, rho=new_rho,
      count=tf.where(where, tf.minimum(memory.count + 1, num_pairs),
                     memory.count))


def written_where(where, write, buffers, conditional=None):
  """`write()`, the buffers rewritten for the members where `where` is true.

  With `conditional` (None: under XLA only), behind a `tf.cond` on
  `any(where)` that returns `buffers` unchanged otherwise. Through the
  conditional, `where` reaches the write as a computed `[B]` array.
  Otherwise XLA fuses the whole line-search logic that decides `where`
  into the write and recomputes it for every element of the `[m, n, B]`
  buffers, several times the cost of the rest of the push (docs/design.md,
  "The memory").
  """
  if conditional is None:
    conditional = _context.in_xla_context()
  if not conditional:
    return write()
  return tf.cond(tf.reduce_any(where), write, lambda: buffers)


def reset(memory, where):
  """Forgets every pair of the members where `where` is true."""
  return memory._replace(
      count=tf.where(where, tf.zeros_like(memory.count), memory.count))


def select(memory, index):
  """The memory of the members `index` (`[C]` int32), as a batch of `C`."""
  return Memory(s=tf.gather(memory.s, index, axis=2),
                y=tf.gather(memory.y, index, axis=2),
                rho=tf.gather(memory.rho, index, axis=1),
                count=tf.gather(memory.count, index))


def _held(memory):
  """`[m, B]` bool: which positions hold a pair."""
  num_pairs = memory.s.shape[0]
  positions = tf.range(num_pairs, dtype=tf.int32)
  return positions[:, None] >= (num_pairs - memory.count)[None, :]


def to_deltas(memory, position_shape):
  """Returns `(position_deltas, gradient_deltas)` shaped `[m, ..., n]`."""
  mask = tf.cast(_held(memory), memory.s.dtype)[:, None, :]
  shape = tf.concat([[memory.s.shape[0]], position_shape], axis=0)
  return (tf.reshape(tf.transpose(memory.s * mask, [0, 2, 1]), shape),
          tf.reshape(tf.transpose(memory.y * mask, [0, 2, 1]), shape))


def from_deltas(position_deltas, gradient_deltas, batch_size, n):
  """Rebuilds a `Memory` from TFP-layout deltas `[m, ..., n]`.

  The pairs from the first one with positive curvature `s . y > 0` to the
  newest are kept, so both this package's results and TFP's (which pad with
  zero pairs) resume with the memory they ended with.
  """
  num_pairs = position_deltas.shape[0]
  shape = tf.stack([num_pairs, batch_size, n])
  s = tf.transpose(tf.reshape(position_deltas, shape), [0, 2, 1])
  y = tf.transpose(tf.reshape(gradient_deltas, shape), [0, 2, 1])
  sy = tf.reduce_sum(s * y, axis=1)
  usable = sy > 0
  positions = tf.range(num_pairs, dtype=tf.int32)
  first = tf.reduce_min(tf.where(usable, positions[:, None], num_pairs),
                        axis=0)
  rho = tf.where(usable, tf.math.divide_no_nan(tf.ones_like(sy), sy),
                 tf.zeros_like(sy))
  return Memory(s=s, y=y, rho=rho, count=num_pairs - first)


def direction(memory, gradient, initial_inverse_hessian=None):
  """Returns the L-BFGS search direction `-H_k g` by the two-loop recursion.

  Algorithm 7.4 of Nocedal & Wright (2006), per member::

    q = g
    for i = k-1, ..., k-m:            # newest to oldest
      alpha_i = rho_i s_i.q ;  q = q - alpha_i y_i
    r = H0 q                          # H0 = gamma I, gamma = s.y / y.y newest
    for i = k-m, ..., k-1:            # oldest to newest
      beta = rho_i y_i.r ;  r = r + s_i (alpha_i - beta)
    return -r

  Notation: `s_i` <-> `position_deltas`, `y_i` <-> `gradient_deltas`,
  `rho_i = 1 / (s_i . y_i)`. Positions that hold no pair have `rho = 0` and
  are exact no-ops, so members holding different numbers of pairs share one
  computation.

  Under XLA each loop is a `tf.while_loop` over the `m` positions that carries
  only `q` (or `r`): unrolled, XLA's fusion duplicates work along the
  dependent chain (much slower), and `tf.scan` would also stack every
  intermediate vector. Elsewhere (eager, plain graphs) the loops are unrolled
  in Python: there every op is a kernel launch and every `tf.while_loop`
  trip a function call, and the unrolled form is faster in a graph-mode
  batch (docs/design.md, "The memory").
  The loops have no `maximum_iterations`: their condition already bounds
  them, and the extra counter costs XLA two more kernels per pass.

  Args:
    memory: `Memory`.
    gradient: `[B, n]`.
    initial_inverse_hessian: optional `[B, n]` (or broadcastable) positive
      diagonal `H0`. When absent, `H0 = gamma I` with the usual scaling from
      the newest pair, and `I` when there is no pair.

  Returns:
    `[B, n]` direction.
  """
  rho = tf.where(_held(memory), memory.rho, tf.zeros_like(memory.rho))
  s, y = memory.s, memory.y
  if _context.in_xla_context():
    first_loop, second_loop = _newest_to_oldest_loop, _oldest_to_newest_loop
  else:
    first_loop = _newest_to_oldest_unrolled
    second_loop = _oldest_to_newest_unrolled

  q, alphas = first_loop(s, y, rho, tf.transpose(gradient))
  if initial_inverse_hessian is None:
    gamma = tf.math.divide_no_nan(
        tf.math.divide_no_nan(tf.ones_like(rho[-1]), rho[-1]),
        tf.reduce_sum(y[-1] * y[-1], axis=0))
    gamma = tf.where(memory.count > 0, gamma, tf.ones_like(gamma))
    r = gamma * q
  else:
    r = tf.transpose(initial_inverse_hessian * tf.transpose(q))
  return -tf.transpose(second_loop(s, y, rho, alphas, r))


def _newest_to_oldest_loop(s, y, rho, q):
  num_pairs = s.shape[0]

  def body(i, q, alphas):
    j = num_pairs - 1 - i
    alpha = rho[j] * tf.reduce_sum(s[j] * q, axis=0)
    return i + 1, q - alpha * y[j], alphas.write(j, alpha)

  alphas = tf.TensorArray(q.dtype, size=num_pairs,
                          element_shape=rho.shape[1:])
  _, q, alphas = tf.while_loop(
      lambda i, *_: i < num_pairs, body, (tf.constant(0), q, alphas))
  return q, alphas.stack()


def _oldest_to_newest_loop(s, y, rho, alphas, r):
  num_pairs = s.shape[0]

  def body(i, r):
    beta = rho[i] * tf.reduce_sum(y[i] * r, axis=0)
    return i + 1, r + s[i] * (alphas[i] - beta)

  _, r = tf.while_loop(lambda i, _: i < num_pairs, body,
                       (tf.constant(0), r))
  return r


def _newest_to_oldest_unrolled(s, y, rho, q):
  alphas = []
  for s_j, y_j, rho_j in reversed(list(zip(tf.unstack(s), tf.unstack(y),
                                           tf.unstack(rho)))):
    alpha = rho_j * tf.reduce_sum(s_j * q, axis=0)
    q = q - alpha * y_j
    alphas.append(alpha)
  return q, alphas[::-1]


def _oldest_to_newest_unrolled(s, y, rho, alphas, r):
  for s_i, y_i, rho_i, alpha_i in zip(tf.unstack(s), tf.unstack(y),
                                      tf.unstack(rho), alphas):
    beta = rho_i * tf.reduce_sum(y_i * r, axis=0)
    r = r + s_i * (alpha_i - beta)
  return r


def chronological(memory):
  """Returns `(s, y, valid)` batch-major: `[B, m, n]`, `[B, m, n]`, `[B, m]`.

  Oldest first and right-aligned, with zeros where no pair is held; for
  algorithms that work on the stacked pairs of one member (L-BFGS-B's compact
  representation).
  """
  held = _held(memory)
  mask = tf.cast(held, memory.s.dtype)[:, None, :]
  return (tf.transpose(memory.s * mask, [2, 0, 1]),
          tf.transpose(memory.y * mask, [2, 0, 1]),
          tf.transpose(held))
