"""Micro-benchmark: the limited memory's push and direction, alone.

The plain L-BFGS twin of `lbfgsb_bench.py --profile`: for a batch of `B`
members (n = 10, m = 10, float64 by default) times, each alone in a
`tf.function` with and without `jit_compile=True`,

- the shifting push and the two-loop recursion (`_memory` on `main`, kept
  here as `shift_push` / `two_loop_direction`), and
- the ring memory: a pair written into the member's own slot, the small
  Gram matrices `S^T Y` and `Y^T Y` kept by one column per push, and the
  direction from the compact representation (`ring_push` /
  `compact_direction`).

Each timed call runs `--steps` pushes (or directions) in a `tf.while_loop`,
so the buffers are loop-carried as in the solver's loop; the table gives
the median time per push (or direction) over `--repeats` calls. The two
directions are checked against each other first.

Run: python benchmarks/memory_profile.py [--batch 1000,10000]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from tf_extopt._solver import _memory


# ---------------------------------------------------------------------------
# The shifting memory (as on `main`): [m, n, B] right-aligned, oldest first.
# ---------------------------------------------------------------------------


def shift_push(s_buffer, y_buffer, rho, count, s, y, where, conditional):
  """`main`'s push on raw buffers; `s`, `y` are `[B, n]`."""
  num_pairs = s_buffer.shape[0]
  s = tf.transpose(s)
  y = tf.transpose(y)
  sy = tf.reduce_sum(s * y, axis=0)
  new_rho = tf.math.divide_no_nan(tf.ones_like(sy), sy)

  def shifted(buffer, new):
    return tf.where(where, tf.concat([buffer[1:], new[None]], axis=0), buffer)

  def pushed():
    return (shifted(s_buffer, s), shifted(y_buffer, y), shifted(rho, new_rho))

  if conditional:
    out = tf.cond(tf.reduce_any(where), pushed,
                  lambda: (s_buffer, y_buffer, rho))
  else:
    out = pushed()
  return out + (tf.where(where, tf.minimum(count + 1, num_pairs), count),)


def two_loop_direction(s_buffer, y_buffer, rho, count, g):
  memory = _memory.Memory(s=s_buffer, y=y_buffer, rho=rho, count=count)
  return _memory.direction(memory, g)


# ---------------------------------------------------------------------------
# The ring memory.
# ---------------------------------------------------------------------------


def ring_write(buffer, head, new, where, how):
  """Writes `new` (`[n, B]`) into slot `head[b]` of `[m, n, B]` `buffer`."""
  num_pairs, n = buffer.shape[0], buffer.shape[1]
  if how == "select":
    slot = tf.equal(tf.range(num_pairs)[:, None], head[None]) & where[None]
    return tf.where(slot[:, None, :], new[None], buffer)
  # Scatter of n * B scalars; members that do not push write what is there.
  batch = tf.shape(head)[0]
  rows = tf.broadcast_to(head[None], tf.stack([n, batch]))
  cols = tf.broadcast_to(tf.range(n)[:, None], tf.stack([n, batch]))
  members = tf.broadcast_to(tf.range(batch)[None], tf.stack([n, batch]))
  index = tf.stack([rows, cols, members], axis=-1)
  old = tf.gather_nd(buffer, index)
  return tf.tensor_scatter_nd_update(buffer, index,
                                     tf.where(where[None], new, old))


def column_write(gram, head, column, where):
  """Writes `column` (`[B, m]`) as column `head[b]` of `[B, m(col), m]`."""
  batch = tf.shape(head)[0]
  index = tf.stack([tf.range(batch), head], axis=-1)
  old = tf.gather_nd(gram, index)
  return tf.tensor_scatter_nd_update(gram, index,
                                     tf.where(where[:, None], column, old))


def ring_push(state, s, y, where, how):
  """Ring push with the Gram upkeep. `state` = (S, Y, SY, YY, head, count).

  S, Y `[m, n, B]` by slot; SY, YY `[B, m(col j), m(row i)]` hold
  `s_i . y_j` and `y_i . y_j`, written by column when `j` is pushed (so
  valid where slot `i` is not newer than slot `j`). `head[b]` is the slot
  the next pair goes to.
  """
  s_buffer, y_buffer, sy_gram, yy_gram, head, count = state
  num_pairs = s_buffer.shape[0]
  s = tf.transpose(s)
  y = tf.transpose(y)
  s_buffer = ring_write(s_buffer, head, s, where, how)
  y_buffer = ring_write(y_buffer, head, y, where, how)
  # After the write: column of the new pair against every slot (itself too).
  sy_column = tf.transpose(tf.reduce_sum(s_buffer * y[None], axis=1))
  yy_column = tf.transpose(tf.reduce_sum(y_buffer * y[None], axis=1))
  sy_gram = column_write(sy_gram, head, sy_column, where)
  yy_gram = column_write(yy_gram, head, yy_column, where)
  head = tf.where(where, (head + 1) % num_pairs, head)
  count = tf.where(where, tf.minimum(count + 1, num_pairs), count)
  return s_buffer, y_buffer, sy_gram, yy_gram, head, count


def compact_direction(state, g):
  """`-H g` from the compact representation (Byrd, Nocedal, Schnabel 1994).

  `H g = gamma g + S p - gamma Y u`, `u = R^-1 S^T g`,
  `p = R^-T ((D + gamma Y^T Y) u - gamma Y^T g)`, `R` the upper triangle of
  `S^T Y` by age. The products over `n` run over all slots at once; the age
  order enters only the two `m`-step triangular solves, each step taking
  one column per member by a gather.
  """
  s_buffer, y_buffer, sy_gram, yy_gram, head, count = state
  num_pairs = s_buffer.shape[0]
  dtype = s_buffer.dtype
  gt = tf.transpose(g)                                          # [n, B]
  a = tf.transpose(tf.reduce_sum(s_buffer * gt[None], axis=1))  # [B, m]
  b = tf.transpose(tf.reduce_sum(y_buffer * gt[None], axis=1))
  slots = tf.range(num_pairs)
  age = (head[:, None] - 1 - slots[None]) % num_pairs           # 0 newest
  held = age < count[:, None]                                   # [B, m]
  diagonal = tf.linalg.diag_part(sy_gram)                       # s_i . y_i
  diagonal = tf.where(held, diagonal, tf.ones_like(diagonal))
  newest = (head - 1) % num_pairs
  sy_new = tf.gather(diagonal, newest[:, None], batch_dims=1)[:, 0]
  yy_new = tf.gather(tf.linalg.diag_part(yy_gram), newest[:, None],
                     batch_dims=1)[:, 0]
  gamma = tf.where(count > 0, tf.math.divide_no_nan(sy_new, yy_new),
                   tf.ones_like(sy_new))
  zero = tf.zeros_like(a)
  a = tf.where(held, a, zero)
  b = tf.where(held, b, zero)

  # u = R^-1 a: newest first; column j of R is sy_gram[:, j] (rows older
  # than j valid; rows already solved are not read again).
  residual = a
  u = zero
  for t in range(num_pairs):
    pick = tf.equal(age, t) & held                              # [B, m]
    slot = (head - 1 - t) % num_pairs
    u_t = tf.reduce_sum(tf.where(pick, residual / diagonal, zero), axis=1)
    column = tf.gather(sy_gram, slot[:, None], batch_dims=1)[:, 0]
    residual = residual - column * u_t[:, None]
    u = tf.where(pick, u_t[:, None], u)

  # w = (D + gamma Y^T Y) u - gamma b, Y^T Y completed by symmetry.
  # yy_gram[b, j, i] is valid where slot i is not newer than slot j.
  valid = age[:, None, :] >= age[:, :, None]                    # [B, j, i]
  yy = tf.where(valid, yy_gram, tf.transpose(yy_gram, [0, 2, 1]))
  yy_u = tf.reduce_sum(yy * u[:, :, None], axis=1)
  w = diagonal * u + gamma[:, None] * (yy_u - b)

  # p = R^-T w: oldest first; p_k = (w_k - sum_{i older} R[i, k] p_i) / D_k.
  p = zero
  for t in reversed(range(num_pairs)):
    pick = tf.equal(age, t) & held
    slot = (head - 1 - t) % num_pairs
    column = tf.gather(sy_gram, slot[:, None], batch_dims=1)[:, 0]
    dot = tf.reduce_sum(tf.where(age > t, column * p, zero), axis=1)
    w_t = tf.gather(w, slot[:, None], batch_dims=1)[:, 0]
    d_t = tf.gather(diagonal, slot[:, None], batch_dims=1)[:, 0]
    p = tf.where(pick, ((w_t - dot) / d_t)[:, None], p)
  p = tf.where(held, p, zero)
  u = tf.where(held, u, zero)
  combined = tf.reduce_sum(
      s_buffer * tf.transpose(p)[:, None]
      - y_buffer * tf.transpose(gamma[:, None] * u)[:, None], axis=0)
  return -(gamma[:, None] * g + tf.transpose(combined))


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def filled(batch, n, num_pairs, rng, dtype):
  """Both memories after `num_pairs + 3` pushes by random members."""
  s_buffer = tf.zeros([num_pairs, n, batch], dtype)
  shift = (s_buffer, s_buffer, tf.zeros([num_pairs, batch], dtype),
           tf.zeros([batch], tf.int32))
  gram = tf.zeros([batch, num_pairs, num_pairs], dtype)
  ring = (s_buffer, s_buffer, gram, gram, tf.zeros([batch], tf.int32),
          tf.zeros([batch], tf.int32))
  for k in range(num_pairs + 3):
    s = tf.constant(rng.randn(batch, n), dtype)
    y = tf.constant(2.0 * rng.randn(batch, n) * 0.1, dtype) + 2.0 * s
    where = tf.constant(rng.uniform(size=batch) < (0.7 if k else 1.0))
    shift = shift_push(*shift, s, y, where, conditional=False)
    ring = ring_push(ring, s, y, where, "select")
  return shift, ring


def check(shift, ring, g):
  ours = compact_direction(ring, g).numpy()
  theirs = two_loop_direction(*shift, g).numpy()
  error = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
  print(f"compact against two-loop direction: relative difference "
        f"{error:.1e}")
  assert error < 1e-8, error


def looped_push(push, steps):
  def run(state, s, y, where):
    def body(i, state):
      # Vary the pair so nothing is hoisted out of the loop.
      scale = 1.0 + tf.cast(i, s.dtype) * 1e-3
      return i + 1, push(state, s * scale, y * scale,
                         tf.roll(where, i, axis=0))
    return tf.while_loop(lambda i, _: i < steps, body,
                         (tf.constant(0), state))[1]
  return run


def looped_direction(direction, steps):
  def run(state, g):
    def body(i, g):
      return i + 1, g + 1e-6 * direction(state, g)
    return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), g))[1]
  return run


def timed(function, args, repeats):
  tf.nest.map_structure(lambda t: t.numpy(), function(*args))
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), function(*args))
    times.append(time.perf_counter() - began)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", default="1000,10000")
  parser.add_argument("--n", type=int, default=10)
  parser.add_argument("--pairs", type=int, default=10)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args()
  dtype = tf.float64
  print(f"n = {args.n}, m = {args.pairs}, float64, {args.steps} pushes or "
        f"directions per call, median of {args.repeats} calls, "
        "variants alternating; ms per push or direction\n")
  print("| B | mode | shift push | shift push (cond) | ring push (select) "
        "| ring push (scatter) | two-loop direction | compact direction |")
  print("|---:|---|---:|---:|---:|---:|---:|---:|")
  for batch in [int(b) for b in args.batch.split(",")]:
    rng = np.random.RandomState(batch)
    shift, ring = filled(batch, args.n, args.pairs, rng, dtype)
    g = tf.constant(rng.randn(batch, args.n), dtype)
    check(shift, ring, g)
    s = tf.constant(rng.randn(batch, args.n), dtype)
    y = 2.0 * s + tf.constant(0.1 * rng.randn(batch, args.n), dtype)
    where = tf.constant(rng.uniform(size=batch) < 0.7)
    for mode, jit in (("XLA", True), ("tf.function", False)):
      variants = [
          (looped_push(lambda st, s, y, w: shift_push(
              *st[:3], st[3], s, y, w, False), args.steps),
           (shift, s, y, where)),
          (looped_push(lambda st, s, y, w: shift_push(
              *st[:3], st[3], s, y, w, True), args.steps),
           (shift, s, y, where)),
          (looped_push(lambda st, s, y, w: ring_push(st, s, y, w, "select"),
                       args.steps), (ring, s, y, where)),
          (looped_push(lambda st, s, y, w: ring_push(st, s, y, w, "scatter"),
                       args.steps), (ring, s, y, where)),
          (looped_direction(lambda st, g: two_loop_direction(*st, g),
                            args.steps), (shift, g)),
          (looped_direction(compact_direction, args.steps), (ring, g)),
      ]
      functions = [tf.function(f, jit_compile=jit, autograph=False)
                   for f, _ in variants]
      times = [[] for _ in variants]
      for _ in range(3):                      # alternate the variants
        for k, (function, (_, arguments)) in enumerate(zip(functions,
                                                          variants)):
          times[k] += timed(function, arguments, args.repeats // 3)
      cells = [f"{1e3 * np.median(t) / args.steps:.3f}" for t in times]
      print(f"| {batch} | {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
