"""Saving solver state to bytes and files, and checking where it came from.

The L-BFGS state between two compiled chunks is one `LBfgsOptimizerResults`
of NumPy arrays, so saving it is saving nine arrays. They are kept in one
NumPy `.npz` archive together with an *identity*: a JSON dict of what must
be the same for a resumed run to take the uninterrupted run's iterates
(variable shapes and dtypes, solver, memory size, options, ...). Loading
compares the identities and names what differs, instead of mixing a state
into a problem it does not belong to.

Files are written the way that survives a kill at any moment: the bytes go
to a temporary file beside the target, are flushed to disk, and replace the
target with one `os.replace` (atomic on POSIX and Windows). A kill before
the rename leaves the previous file whole; a kill after it, the new one.
"""

import hashlib
import io
import json
import os

import numpy as np
import tensorflow as tf

from tf_extopt._results import LBfgsOptimizerResults

# Bumped when the layout of what is saved changes, so that an old backup
# gives a clear error rather than a confusing one.
FORMAT = 1

_IDENTITY = "identity"
_RESULTS_PREFIX = "results/"


def fingerprint(value):
  """A stable, JSON-able description of an option's value.

  Equal across processes for equal values: functions by qualified name
  (their `repr` holds an address), dtypes by name, arrays and tensors by a
  digest of their shape, dtype and bytes.
  """
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, tf.DType):
    return value.name
  if isinstance(value, (list, tuple)):
    return [fingerprint(v) for v in value]
  if isinstance(value, dict):
    return {str(k): fingerprint(v) for k, v in value.items()}
  if callable(value):
    return "%s.%s" % (getattr(value, "__module__", "?"),
                      getattr(value, "__qualname__", type(value).__name__))
  try:
    array = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    return repr(value)
  if array.dtype == object:
    return repr(value)
  return "array%s:%s:%s" % (list(array.shape), array.dtype.name,
                            digest(array))


def digest(array):
  """A short hex digest of an array's bytes."""
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def check_identity(saved, expected, what, remedy):
  """Raises `ValueError` naming the first entries where two identities differ.

  Args:
    saved: The identity stored with the state (a dict).
    expected: This run's identity.
    what: What holds the state, for the message ("The backup in /dir").
    remedy: What to do about it, for the message.
  """
  if saved == expected:
    return
  keys = sorted(set(saved) | set(expected))
  different = [k for k in keys if saved.get(k) != expected.get(k)]
  details = "; ".join(
      "%s was %s, is %s" % (k, _short(saved.get(k)), _short(expected.get(k)))
      for k in different[:3])
  raise ValueError("%s was written by a different optimization (%s). %s" % (
      what, details, remedy))


def _short(value, limit=160):
  text = json.dumps(value) if not isinstance(value, str) else repr(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def results_arrays(results):
  """`{name: array}` of an `LBfgsOptimizerResults` (NumPy or tensors)."""
  return {_RESULTS_PREFIX + name: np.asarray(value)
          for name, value in zip(LBfgsOptimizerResults._fields, results)}


def results_from_arrays(arrays):
  """The `LBfgsOptimizerResults` that `results_arrays` stored, or None."""
  names = [_RESULTS_PREFIX + f for f in LBfgsOptimizerResults._fields]
  if not all(n in arrays for n in names):
    return None
  return LBfgsOptimizerResults(*(np.asarray(arrays[n]) for n in names))


def encode(identity, arrays):
  """Bytes of an archive holding `identity` (JSON) and named `arrays`."""
  buffer = io.BytesIO()
  payload = dict(arrays)
  payload[_IDENTITY] = np.array(json.dumps(
      dict(identity, format=FORMAT), sort_keys=True))
  np.savez(buffer, **payload)
  return buffer.getvalue()


def decode(data, what):
  """`(identity, arrays)` from `encode`'s bytes.

  Raises:
    ValueError: The bytes are not such an archive (`what` names them), or
      were written in another format.
  """
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
      arrays = {name: archive[name] for name in archive.files}
    identity = json.loads(str(arrays.pop(_IDENTITY)))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError("%s is not a tf_extopt solver state, or is damaged: "
                     "%s: %s" % (what, type(e).__name__, e)) from e
  if identity.get("format") != FORMAT:
    raise ValueError("%s was written in format %r by another version of "
                     "tf_extopt; this version reads format %d." % (
                         what, identity.get("format"), FORMAT))
  return identity, arrays


def write_atomically(path, data):
  """Writes `data` to `path` so that a kill leaves the old or new file whole.

  The bytes go to a temporary file in the same directory (a rename is
  atomic only within one file system), are flushed and synced, then
  replace `path` in one `os.replace`.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = "%s.tmp-%d" % (path, os.getpid())
  try:
    with open(temporary, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  try:
    # The rename itself is durable once the directory is synced (a power
    # loss, not just a kill); not every platform can open a directory.
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


class Backup:
  """One fit's backup file in a directory: written whole, or not at all.

  `tf_extopt.keras.fit` keeps everything a resumed fit needs in one archive,
  `BACKUP_FILE` in the directory: the identity of the fit, the model's
  weights, the solver's state, the iteration and evaluation counts and the
  history. One file replaced by one rename cannot be seen half written, nor
  pair a new part with an old one.

  Attributes:
    path: The backup file.
    every: Saves are made when the iteration count reaches a multiple of
      this.
  """

  BACKUP_FILE = "tf_extopt_fit_backup.npz"

  def __init__(self, directory, every, delete, double):
    """Args: the backup `directory`, `every` (see above), whether to
    `delete` the backup when the fit ends, and whether to keep the
    previous backup too (`double`, as Keras 3's `double_checkpoint`)."""
    self.directory = directory
    self.path = os.path.join(directory, self.BACKUP_FILE)
    self.every = every
    self._delete = delete
    self._double = double

  @property
  def _previous_path(self):
    return self.path + ".bkp"

  def load(self, identity):
    """`(meta, arrays)` of the backup, or None when there is none.

    With `double`, a backup that cannot be read is replaced by the one
    before it, as Keras 3 does.

    Raises:
      ValueError: The backup belongs to another fit (naming what differs),
        or is damaged (without `double`, or both are).
    """
    what = "The backup in %s" % self.directory
    if not os.path.exists(self.path):
      if self._double and os.path.exists(self._previous_path):
        return self._read(self._previous_path, identity, what)
      return None
    try:
      return self._read(self.path, identity, what)
    except _Damaged:
      if not (self._double and os.path.exists(self._previous_path)):
        raise
    return self._read(self._previous_path, identity, what)

  @staticmethod
  def _read(path, identity, what):
    with open(path, "rb") as f:
      data = f.read()
    try:
      saved, arrays = decode(data, what)
    except ValueError as e:
      raise _Damaged(str(e)) from e
    saved.pop("format", None)
    meta = saved.pop("meta")
    check_identity(
        saved, identity, what,
        "A backup directory belongs to one fit: pass the same model, "
        "method and options as the interrupted run, or another backup_dir "
        "(or delete this one) to start afresh.")
    return meta, arrays

  def save(self, identity, meta, arrays):
    """Writes a new backup over the last one, atomically."""
    data = encode(dict(identity, meta=meta), arrays)
    if self._double and os.path.exists(self.path):
      # The last backup becomes the previous one by a rename, not a copy:
      # a kill before the new one is written leaves the previous one,
      # which `load` reads when the last is missing.
      os.replace(self.path, self._previous_path)
    write_atomically(self.path, data)

  def end(self):
    """When the fit ends: removes the backup, if asked to (as Keras does).

    Only the files written here, then the directory if nothing else is in
    it: Keras 3 removes the whole directory, which is not ours to remove.
    """
    if not self._delete:
      return
    # With the temporary files a kill inside a save left behind.
    prefix = os.path.basename(self.path)
    for name in os.listdir(self.directory) if os.path.isdir(
        self.directory) else []:
      if name == prefix or name.startswith(prefix + "."):
        os.remove(os.path.join(self.directory, name))
    try:
      os.rmdir(self.directory)
    except OSError:
      pass  # Not empty, or already gone.


class _Damaged(ValueError):
  """A backup file that is not a readable tf_extopt archive."""
