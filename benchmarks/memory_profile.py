"""Micro-benchmark: the limited memory's push and direction, alone.

The plain L-BFGS twin of `lbfgsb_bench.py --profile`: for a batch of `B`
members (n = 10, m = 10, float64 by default) times, each alone in a
`tf.function` with and without `jit_compile=True`,

- the solver's shifting push, with and without its conditional, and its
  two-loop recursion (`_memory.push`, `_memory.direction`), and
- the ring memory: a pair written into the member's own slot, the small
  Gram matrices `S^T Y` and `Y^T Y` kept by one column per push, and the
  direction from the compact representation (`ring_push` /
  `compact_direction`).

Each timed call runs `--steps` pushes (or directions) in a `tf.while_loop`,
so the buffers are loop-carried as in the solver's loop; the table gives
the median time per push (or direction) over `--repeats` calls. The two
directions are checked against each other first.

With `--in-situ`, instead, the whole solver on a batch of Rosenbrock-10
problems (`lbfgs_bench.py`'s timing batch), graph mode and XLA, in
alternating rounds, with `_memory` (and the driver) patched:

- `push twice`, `direction twice`: each computed a second time on a
  perturbed input that cannot be merged with the first (the results are
  discarded by a `0 *` term), so the extra time per trip is what one more
  push or direction costs inside the loop, with the same iterates;
- `ring memory`: pairs written into each member's own slot of a `[m, B, n]`
  ring, put in age order by one gather per direction (same iterates);
- `advance twice`: the driver's whole per-trip update computed a second
  time, as above (same iterates).

Run: python benchmarks/memory_profile.py [--batch 1000,10000] [--in-situ]
"""

import argparse
import collections
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

import tf_extopt
from tf_extopt import test_problems
from tf_extopt._solver import _driver
from tf_extopt._solver import _memory


# ---------------------------------------------------------------------------
# The solver's shifting memory: [m, n, B] right-aligned, oldest first.
# ---------------------------------------------------------------------------


def shift_push(s_buffer, y_buffer, rho, count, s, y, where, conditional):
  """`_memory.push` on raw buffers, with or without its conditional."""
  return tuple(_memory.push(_memory.Memory(s_buffer, y_buffer, rho, count),
                            s, y, where, conditional=conditional))


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


def ring_push(state, s, y, where, how, gram=True):
  """Ring push with the Gram upkeep. `state` = (S, Y, SY, YY, head, count).

  With `gram=False` only the pair is written (the cost of the write alone).

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
  if not gram:
    return (s_buffer, y_buffer, sy_gram, yy_gram,
            tf.where(where, (head + 1) % num_pairs, head), count)
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
# In the loop: the solver with `_memory` or the driver patched.
# ---------------------------------------------------------------------------

RingMemory = collections.namedtuple(
    "RingMemory", ["s", "y", "rho", "count", "head"])


def _ring_module():
  """`_memory`'s interface on a per-member ring `[m, B, n]`, as a dict."""
  shift = {name: getattr(_memory, name) for name in (
      "Memory", "from_deltas", "direction")}

  def empty(batch_size, num_pairs, n, dtype):
    zeros = tf.zeros(tf.stack([num_pairs, batch_size, n]), dtype=dtype)
    ints = tf.zeros(tf.reshape(batch_size, [1]), dtype=tf.int32)
    return RingMemory(s=zeros, y=zeros, count=ints, head=ints,
                      rho=tf.zeros(tf.stack([num_pairs, batch_size]), dtype))

  def push(memory, s, y, where):
    num_pairs = memory.s.shape[0]
    # Summed over the leading axis as `_memory.push` does (same rounding).
    sy = tf.reduce_sum(tf.transpose(s) * tf.transpose(y), axis=0)
    rho = tf.math.divide_no_nan(tf.ones_like(sy), sy)

    def pushed():
      slot = tf.equal(tf.range(num_pairs)[:, None], memory.head[None])
      slot &= where[None]
      return (tf.where(slot[:, :, None], s[None], memory.s),
              tf.where(slot[:, :, None], y[None], memory.y),
              tf.where(slot, rho[None], memory.rho))

    new_s, new_y, new_rho = _memory.written_where(
        where, pushed, (memory.s, memory.y, memory.rho))
    return RingMemory(
        s=new_s, y=new_y, rho=new_rho,
        count=tf.where(where, tf.minimum(memory.count + 1, num_pairs),
                       memory.count),
        head=tf.where(where, (memory.head + 1) % num_pairs, memory.head))

  def select(memory, index):
    return RingMemory(s=tf.gather(memory.s, index, axis=1),
                      y=tf.gather(memory.y, index, axis=1),
                      rho=tf.gather(memory.rho, index, axis=1),
                      count=tf.gather(memory.count, index),
                      head=tf.gather(memory.head, index))

  def ordered(memory):
    """`s, y, rho` oldest first and right-aligned, by one gather each."""
    num_pairs = memory.s.shape[0]
    slots = (memory.head[None] + tf.range(num_pairs)[:, None]) % num_pairs
    members = tf.broadcast_to(tf.range(tf.shape(memory.head)[0])[None],
                              tf.shape(slots))
    index = tf.stack([slots, members], axis=-1)
    return (tf.gather_nd(memory.s, index), tf.gather_nd(memory.y, index),
            tf.gather_nd(memory.rho, index))

  def to_deltas(memory, position_shape):
    s, y, _ = ordered(memory)
    mask = tf.cast(_memory._held(memory), s.dtype)[:, :, None]
    shape = tf.concat([[memory.s.shape[0]], position_shape], axis=0)
    return tf.reshape(s * mask, shape), tf.reshape(y * mask, shape)

  def from_deltas(position_deltas, gradient_deltas, batch_size, n):
    old = shift["from_deltas"](position_deltas, gradient_deltas, batch_size,
                               n)
    return RingMemory(s=tf.transpose(old.s, [0, 2, 1]),
                      y=tf.transpose(old.y, [0, 2, 1]), rho=old.rho,
                      count=old.count, head=tf.zeros_like(old.count))

  def direction(memory, gradient, initial_inverse_hessian=None):
    s, y, rho = ordered(memory)
    return shift["direction"](
        shift["Memory"](s=tf.transpose(s, [0, 2, 1]),
                        y=tf.transpose(y, [0, 2, 1]), rho=rho,
                        count=memory.count),
        gradient, initial_inverse_hessian)

  def chronological(memory):
    s, y, _ = ordered(memory)
    mask = _memory._held(memory)
    weights = tf.cast(mask, s.dtype)[:, :, None]
    return (tf.transpose(s * weights, [1, 0, 2]),
            tf.transpose(y * weights, [1, 0, 2]), tf.transpose(mask))

  return dict(empty=empty, push=push, reset=_memory.reset, select=select,
              to_deltas=to_deltas, from_deltas=from_deltas,
              direction=direction, chronological=chronological)


def _patches():
  """Variant name -> {(module, attribute): replacement}."""
  push, direction = _memory.push, _memory.direction
  advance = _driver._advance  # pylint: disable=protected-access

  def push_twice(memory, s, y, where):
    first = push(memory, s, y, where)
    second = push(memory, s + 0.0 * y, y, where)
    return first._replace(s=first.s + 0.0 * second.s,
                          y=first.y + 0.0 * second.y)

  def direction_twice(memory, g, initial_inverse_hessian=None):
    first = direction(memory, g, initial_inverse_hessian)
    second = direction(memory, g + 0.0 * first, initial_inverse_hessian)
    return first + 0.0 * second

  def advance_twice(config, strategy, state, x, f, g):
    first = advance(config, strategy, state, x, f, g)
    second = advance(config, strategy, state, x, f + 0.0 * first.f[:1], g)
    return first._replace(f=first.f + 0.0 * second.f)

  return {
      "main's memory": {},
      "push twice": {(_memory, "push"): push_twice},
      "direction twice": {(_memory, "direction"): direction_twice},
      "ring memory": {(_memory, name): function
                      for name, function in _ring_module().items()},
      "advance twice": {(_driver, "_advance"): advance_twice},
  }


def in_situ(batch, rounds):
  """Times the patched solvers; prints ms per trip and ratios to main's."""
  rosenbrock = test_problems.value_and_gradients(test_problems._rosenbrock)
  starts = tf.constant(np.random.RandomState(0).uniform(
      -2.0, 2.0, (batch, 10)))
  print(f"## In the loop: {batch} Rosenbrock-10 problems, tolerance 1e-6, "
        f"{rounds} alternating rounds\n")
  print("| mode | variant | wall time | batched evaluations | ms per trip "
        "| main's / variant (wall) | same iterates |")
  print("|---|---|---:|---:|---:|---:|---|")
  for mode, jit in (("tf.function", False), ("XLA", True)):
    functions, results = {}, {}
    for name, patch in _patches().items():
      saved = {key: getattr(*key) for key in patch}
      for (module, attribute), value in patch.items():
        setattr(module, attribute, value)
      try:
        functions[name] = tf.function(
            lambda x: tf_extopt.lbfgs_minimize(
                rosenbrock, x, tolerance=1e-6, max_iterations=1000),
            jit_compile=jit)
        results[name] = functions[name](starts)       # trace, compile
      finally:
        for (module, attribute), value in saved.items():
          setattr(module, attribute, value)
    times = {name: [] for name in functions}
    for _ in range(rounds):
      for name, function in functions.items():
        began = time.perf_counter()
        function(starts).position.numpy()
        times[name].append(time.perf_counter() - began)
    reference = results["main's memory"]
    for name in functions:
      trips = int(results[name].num_objective_evaluations)
      wall = np.median(times[name])
      ratio = np.median(np.array(times["main's memory"])
                        / np.array(times[name]))
      same = np.array_equal(results[name].position.numpy(),
                            reference.position.numpy())
      print(f"| {mode} | {name} | {1e3 * wall:.0f} ms | {trips} | "
            f"{1e3 * wall / trips:.3f} | {ratio:.2f}x | "
            f"{'yes' if same else 'no'} |", flush=True)
  print()


# ---------------------------------------------------------------------------
# Alone.
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
  parser.add_argument("--in-situ", action="store_true",
                      help="time the patched solver instead")
  parser.add_argument("--rounds", type=int, default=7,
                      help="alternating rounds with --in-situ")
  args = parser.parse_args()
  if args.in_situ:
    for batch in [int(b) for b in args.batch.split(",")]:
      in_situ(batch, args.rounds)
    return
  dtype = tf.float64
  print(f"n = {args.n}, m = {args.pairs}, float64, {args.steps} pushes or "
        f"directions per call, median of {args.repeats} calls, "
        "variants alternating; ms per push or direction\n")
  print("| B | mode | shift push | shift push (cond) | ring write alone "
        "(select) | ring push (select) | ring push (scatter) | two-loop "
        "direction | compact direction |")
  print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
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
          (looped_push(lambda st, s, y, w: ring_push(st, s, y, w, "select",
                                                     gram=False),
                       args.steps), (ring, s, y, where)),
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
