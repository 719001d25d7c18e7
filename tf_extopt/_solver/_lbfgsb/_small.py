"""Batched products of small matrices, `[B, i, k] x [B, k, j]`.

L-BFGS-B's compact form multiplies thousands of tiny matrices per trip
(`2m x 2m` blocks, and `n x 2m` ones summed over `n`). XLA's CPU backend
runs a batched `dot` as one small matrix product per member, which costs
several times a broadcast product summed over the shared axis that XLA
fuses into one pass. Outside XLA the broadcast materialises its `[B, i, k, j]`
product and is several times slower, so there the products stay
`tf.linalg.matmul`. The same functions serve both, chosen at trace time.

The broadcast only wins while the summed axis is short: with a long one
XLA's reduction runs several times slower than its `dot`. Products summed
over more than `MAX_FUSED_TERMS` use `dot` under XLA too. The measurements
behind both limits are in benchmarks/README.md, "Where a direction's time
goes".
"""

import tensorflow as tf

from tf_extopt._solver import _context

__all__ = ["matmul", "matvec", "MAX_FUSED_TERMS"]

MAX_FUSED_TERMS = 32


def _fuse(terms):
  """Whether a product summed over `terms` (static or None) is broadcast."""
  return (_context.in_xla_context() and terms is not None
          and terms <= MAX_FUSED_TERMS)


def matmul(a, b, transpose_a=False, transpose_b=False):
  """`a @ b` over the last two axes, each optionally transposed."""
  if not _fuse(a.shape[-2] if transpose_a else a.shape[-1]):
    return tf.linalg.matmul(a, b, transpose_a=transpose_a,
                            transpose_b=transpose_b)
  if transpose_a:
    a = tf.linalg.matrix_transpose(a)
  if not transpose_b:
    b = tf.linalg.matrix_transpose(b)
  # [..., i, 1, k] x [..., 1, j, k] summed over k.
  return tf.reduce_sum(a[..., :, None, :] * b[..., None, :, :], axis=-1)


def matvec(a, v, transpose_a=False, fuse=None):
  """`a @ v` for `a` `[..., i, k]` (or its transpose) and `v` `[..., k]`.

  `fuse=None` broadcasts by the rule above (under XLA, short sums);
  `fuse=True` always broadcasts, which `_dense` needs outside XLA too: there
  `tf.linalg.matvec` rounds float32 differently, and the dense path's
  iterates must be the same in every call mode.
  """
  if fuse is None:
    fuse = _fuse(a.shape[-2] if transpose_a else a.shape[-1])
  if not fuse:
    return tf.linalg.matvec(a, v, transpose_a=transpose_a)
  if transpose_a:
    return tf.reduce_sum(a * v[..., :, None], axis=-2)
  return tf.reduce_sum(a * v[..., None, :], axis=-1)
