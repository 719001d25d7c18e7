"""Saving and resuming L-BFGS runs: killed fits resume as the same run.

The kill tests run `tests/_preempted_fit.py` in subprocesses, kill them
with SIGKILL at a chosen iteration (or inside a save, between writing the
new backup and renaming it), start the same command again, and compare
with an uninterrupted run. The in-process tests check the state's
semantics, the round trips and the errors.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras
import tf_extopt
from tf_extopt._interface import _checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _distribute_helpers as helpers  # pylint: disable=g-import-not-at-top,wrong-import-position

tf_keras = pytest.importorskip("tf_keras")

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "_preempted_fit.py")
_ITERATIONS = 20


def _run(out, backup, *args, killed=False):
  """Runs `_preempted_fit.py`; returns its output arrays (None if killed)."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(tf_extopt.__file__))]
      + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  process = subprocess.run(
      [sys.executable, _SCRIPT, str(out), "--backup", str(backup),
       "--max-iterations", str(_ITERATIONS)] + [str(a) for a in args],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      timeout=300, check=False)
  output = process.stdout.decode()[-3000:]
  if killed:
    assert process.returncode == -signal.SIGKILL, output
    assert not os.path.exists(str(out) + ".npz")
    return None
  assert process.returncode == 0, output
  with np.load(str(out) + ".npz") as arrays:
    return {k: arrays[k] for k in arrays.files}


def _weights(run):
  return [run[k] for k in sorted(run) if k.startswith("w")]


def _assert_same_run(resumed, reference, rtol=1e-10):
  for a, b in zip(_weights(resumed), _weights(reference)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
  for key in ("loss",):
    if key in reference:
      np.testing.assert_allclose(resumed[key], reference[key], rtol=rtol)
  for key in ("evaluations", "epochs", "nit", "nfev"):
    if key in reference:
      np.testing.assert_array_equal(resumed[key], reference[key], key)


# --- Killed subprocesses ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("package,save_freq,kill_at", [
    ("keras", "epoch", 7),
    # Killed in the middle of a replayed chunk: the iterations after the
    # last backup (at 10) are made again.
    ("tf_keras", 5, 12),
])
def test_killed_lbfgs_fit_resumes_on_the_uninterrupted_path(
    tmp_path, package, save_freq, kill_at):
  args = ("--package", package, "--save-freq", save_freq)
  reference = _run(tmp_path / "reference", tmp_path / "unused", *args)
  backup = tmp_path / "backup"
  _run(tmp_path / "run", backup, *args, "--kill-at", kill_at, killed=True)
  assert os.listdir(backup) == [_checkpoint.Backup.BACKUP_FILE]
  resumed = _run(tmp_path / "run", backup, *args)
  # Only the remaining iterations, from the last backup on.
  last_backup = kill_at if save_freq == "epoch" else (
      kill_at // save_freq * save_freq)
  np.testing.assert_array_equal(resumed["seen"],
                                np.arange(last_backup, _ITERATIONS))
  # The same run: weights, history, counts, to round-off.
  _assert_same_run(resumed, reference)
  assert len(resumed["loss"]) == _ITERATIONS
  # delete_checkpoint=True (the default) removed it at the end.
  assert not backup.exists()


@pytest.mark.slow
def test_killed_scipy_fit_resumes_its_iterations_and_weights(tmp_path):
  backup = tmp_path / "backup"
  kill_at = 7
  args = ("--method", "L-BFGS-B")
  _run(tmp_path / "run", backup, *args, "--kill-at", kill_at, killed=True)
  resumed = _run(tmp_path / "run", backup, *args)
  np.testing.assert_array_equal(resumed["seen"],
                                np.arange(kill_at, _ITERATIONS))
  np.testing.assert_array_equal(resumed["epochs"], np.arange(_ITERATIONS))
  assert resumed["nit"] == _ITERATIONS

  # SciPy's memory is not restored: what the restarted run guarantees is
  # the uninterrupted run up to the backup, then a fresh SciPy run from
  # its weights for the remaining iterations.
  x, y = helpers.data("float64")
  with helpers.floatx("float64"):
    model = helpers.model()
    first = tf_extopt.keras.fit(model, x, y, method="L-BFGS-B",
                                max_iterations=kill_at, verbose=0)
    second = tf_extopt.keras.fit(model, x, y, method="L-BFGS-B",
                                 max_iterations=_ITERATIONS - kill_at,
                                 verbose=0)
  np.testing.assert_allclose(
      resumed["loss"],
      first.history["loss"] + second.history["loss"], rtol=1e-10)
  # Evaluations count on from the interrupted run's.
  np.testing.assert_array_equal(
      resumed["evaluations"],
      first.evaluations + [first.evaluations[-1] + e
                           for e in second.evaluations])
  assert resumed["nfev"] == first.result.nfev + second.result.nfev
  for a, b in zip(_weights(resumed), model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_kill_inside_a_save_keeps_the_previous_backup(tmp_path):
  reference = _run(tmp_path / "reference", tmp_path / "unused")
  backup = tmp_path / "backup"
  # Killed in the 8th save (the backup after iteration 8), with the new
  # backup written to its temporary file but not renamed.
  _run(tmp_path / "run", backup, "--kill-at-save", 8, killed=True)
  names = sorted(os.listdir(backup))
  assert names[0] == _checkpoint.Backup.BACKUP_FILE
  assert len(names) == 2 and names[1].startswith(names[0] + ".tmp-"), names
  resumed = _run(tmp_path / "run", backup)
  # The previous backup (after 7 iterations) was the one used.
  np.testing.assert_array_equal(resumed["seen"], np.arange(7, _ITERATIONS))
  _assert_same_run(resumed, reference)
  # The leftover temporary file went with the backup.
  assert not backup.exists()


@pytest.mark.slow
def test_killed_interface_resumes_from_a_tf_train_checkpoint(tmp_path):
  args = ("--mode", "interface", "--save-freq", 5)
  reference = _run(tmp_path / "reference", tmp_path / "reference-ckpt",
                   *args)
  directory = tmp_path / "ckpt"
  _run(tmp_path / "run", directory, *args, "--kill-at", 12, killed=True)
  resumed = _run(tmp_path / "run", directory, *args)
  # Resumed from the checkpoint at iteration 10: the same iterates from
  # there on, with the counts going on.
  np.testing.assert_allclose(resumed["seen"], reference["seen"][10:],
                             rtol=1e-10)
  _assert_same_run(resumed, reference)


# --- LbfgsOptimizerInterface's state ----------------------------------------


def _problem(n=6):
  """The extended Rosenbrock function: tens of iterations from 0."""
  v = tf.Variable(np.zeros(n))

  def loss():
    return tf.reduce_sum(100. * (v[1:] - v[:-1] ** 2) ** 2
                         + (1. - v[:-1]) ** 2)
  return v, loss


@pytest.mark.parametrize("bounded", [False, True])
def test_interface_state_round_trip_through_checkpoint(tmp_path, bounded):
  def make(max_iterations):
    v, loss = _problem()
    bounds = [(v, (-0.5, 0.8))] if bounded else None
    opt = tf_extopt.LbfgsOptimizerInterface(
        loss, [v], var_to_bounds=bounds, max_iterations=max_iterations,
        num_correction_pairs=3)
    return v, opt

  v, opt = make(12)
  seen = []
  opt.minimize(progress_callback=lambda p: seen.append((p.nit, p.nfev,
                                                        p.fun)))
  uninterrupted = v.numpy()
  assert opt.state.num_iterations == 12

  v, opt = make(5)
  assert opt.state is None
  opt.minimize()
  tf.train.Checkpoint(lbfgs=opt).write(str(tmp_path / "ckpt"))

  v, opt = make(12)
  tf.train.Checkpoint(lbfgs=opt).read(str(tmp_path / "ckpt")).assert_consumed()
  assert opt.state.num_iterations == 5
  resumed = []
  result = opt.minimize(progress_callback=lambda p: resumed.append(
      (p.nit, p.nfev, p.fun)))
  np.testing.assert_allclose(resumed, seen[5:], rtol=1e-12)
  np.testing.assert_allclose(v.numpy(), uninterrupted, rtol=1e-12)
  assert result.nit == 12
  # Only that run resumed; the next starts afresh from the variables.
  assert opt.minimize().nit <= 12 and opt.state.num_iterations != 24


def test_interface_state_is_never_ahead_of_the_callbacks():
  v, loss = _problem()
  opt = tf_extopt.LbfgsOptimizerInterface(loss, [v], max_iterations=11,
                                          iterations_per_call=4)
  states = []

  def progress(p):
    states.append((p.nit, int(opt.state.num_iterations)))
    if p.nit == opt.state.num_iterations:
      np.testing.assert_array_equal(opt.state.position, p.x)

  opt.minimize(progress_callback=progress)
  # Exact at chunk ends (multiples of 4, and the last), the chunk's start
  # inside it.
  assert states == [(k, k if k % 4 == 0 or k == 11 else k // 4 * 4)
                    for k in range(1, 12)]


def test_restore_refuses_a_state_of_another_problem(tmp_path):
  v, loss = _problem()
  opt = tf_extopt.LbfgsOptimizerInterface(loss, [v], max_iterations=3)
  opt.minimize()
  state = opt.state
  with pytest.raises(TypeError, match="lacks"):
    opt.restore((1, 2))
  v5, loss5 = _problem(n=5)
  other = tf_extopt.LbfgsOptimizerInterface(loss5, [v5])
  with pytest.raises(ValueError, match=r"state.position has shape \(6,\)"):
    other.restore(state)
  pairs = tf_extopt.LbfgsOptimizerInterface(loss, [v],
                                            num_correction_pairs=4)
  with pytest.raises(ValueError, match="position_deltas has shape"):
    pairs.restore(state)
  float32 = tf_extopt.LbfgsOptimizerInterface(loss, [v], dtype=tf.float32)
  with pytest.raises(ValueError, match="dtype float64.*float32"):
    float32.restore(state)
  # Through a checkpoint, the identity names what differs.
  tf.train.Checkpoint(lbfgs=opt).write(str(tmp_path / "ckpt"))
  bounded = tf_extopt.LbfgsOptimizerInterface(loss, [v],
                                              var_to_bounds=[(v, (0, 1))])
  with pytest.raises(ValueError, match="different optimization.*solver"):
    tf.train.Checkpoint(lbfgs=bounded).read(str(tmp_path / "ckpt"))


# --- lbfgs_minimize's results -------------------------------------------------


@pytest.mark.parametrize("solver", ["lbfgs", "lbfgsb"])
def test_solver_results_round_trip_through_checkpoint(tmp_path, solver):
  target = tf.constant([1., -2., 3., 0.5], tf.float64)

  def value_and_gradients(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      value = (tf.reduce_sum(tf.math.cosh(x - target))
               + tf.reduce_sum(x[1:] * x[:-1]) ** 2)
    return value, tape.gradient(value, x)

  if solver == "lbfgs":
    minimize = tf_extopt.lbfgs_minimize
  else:
    def minimize(*args, **kwargs):
      return tf_extopt.lbfgsb_minimize(*args, lower_bounds=-1.,
                                       upper_bounds=2., **kwargs)
  start = tf.zeros([4], tf.float64)
  uninterrupted = minimize(value_and_gradients, start, max_iterations=8,
                           num_correction_pairs=3, tolerance=0)
  assert int(uninterrupted.num_iterations) == 8
  first = minimize(value_and_gradients, start, max_iterations=3,
                   num_correction_pairs=3, tolerance=0)
  # As `LBfgsOptimizerResults`' docstring shows.
  saved = tf.train.Checkpoint(**{
      name: tf.Variable(value) for name, value in first._asdict().items()})
  path = saved.write(str(tmp_path / "results"))
  loaded = tf.train.Checkpoint(**{
      name: tf.Variable(tf.zeros_like(value))
      for name, value in first._asdict().items()})
  loaded.read(path).assert_consumed()
  previous = tf_extopt.LBfgsOptimizerResults(**{
      name: getattr(loaded, name).read_value()
      for name in tf_extopt.LBfgsOptimizerResults._fields})
  resumed = minimize(value_and_gradients, None,
                     previous_optimizer_results=previous, max_iterations=8,
                     num_correction_pairs=3, tolerance=0)
  assert int(resumed.num_iterations) == int(uninterrupted.num_iterations)
  assert (int(resumed.num_objective_evaluations)
          == int(uninterrupted.num_objective_evaluations))
  np.testing.assert_allclose(resumed.position, uninterrupted.position,
                             rtol=1e-12)


# --- keras.fit's backups, in process -----------------------------------------


class _Interrupt(Exception):
  pass


class _InterruptAt(keras.callbacks.Callback):

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.epoch:
      raise _Interrupt()


def _fit(callbacks, method="lbfgs", max_iterations=10, model=None, **kwargs):
  x, y = helpers.data("float64")
  with helpers.floatx("float64"):
    model = model or helpers.model()
    return model, tf_extopt.keras.fit(model, x, y, method=method,
                                      max_iterations=max_iterations,
                                      callbacks=callbacks, verbose=0,
                                      **kwargs)


def _backup_meta(directory):
  path = os.path.join(directory, _checkpoint.Backup.BACKUP_FILE)
  with open(path, "rb") as f:
    identity, _ = _checkpoint.decode(f.read(), path)
  return identity["meta"]


def test_save_freq_counts_iterations_and_delete_checkpoint(tmp_path):
  backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), save_freq=3,
                                            delete_checkpoint=False)
  callbacks = [backup, _InterruptAt(7)]
  with pytest.raises(_Interrupt):
    _fit(callbacks)
  assert len(callbacks) == 2  # Yours, not modified.
  # Saved after iterations 3 and 6; epoch 7 was the 8th iteration.
  meta = _backup_meta(tmp_path / "b")
  assert meta["nit"] == 6 and meta["epoch"] == 6
  assert len(meta["history"]["loss"]) == 6
  # delete_checkpoint=False: the backup stays after a completed run, and
  # running the same command again resumes at its end.
  model, history = _fit([backup])
  assert _backup_meta(tmp_path / "b")["nit"] == 9
  weights = model.get_weights()
  seen = []
  model, again = _fit([backup, keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: seen.append(epoch))])
  assert seen == [9]  # The one iteration after the last backup.
  assert again.history["loss"] == pytest.approx(history.history["loss"],
                                                rel=1e-12)
  for a, b in zip(model.get_weights(), weights):
    np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_interrupted_fit_continues_its_history(tmp_path, package, method):
  x, y = helpers.data("float64")

  def model():
    if package == "keras":
      return helpers.model()
    tf_keras.utils.set_random_seed(3)
    net = tf_keras.Sequential([
        tf_keras.layers.Dense(8, activation="tanh", input_shape=(2,),
                              dtype="float64"),
        tf_keras.layers.Dense(1, dtype="float64")])
    net.compile(loss="mse")
    return net

  module = keras if package == "keras" else tf_keras

  class InterruptAt(module.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      if epoch == 4:
        raise _Interrupt()

  with helpers.floatx("float64"):
    reference = model()
    full = tf_extopt.keras.fit(reference, x, y, method=method,
                               max_iterations=8, verbose=0)
    directory = str(tmp_path / "b")
    with pytest.raises(_Interrupt):
      tf_extopt.keras.fit(model(), x, y, method=method, max_iterations=8,
                          verbose=0, callbacks=[
                              module.callbacks.BackupAndRestore(directory),
                              InterruptAt()])
    resumed_model = model()
    resumed = tf_extopt.keras.fit(
        resumed_model, x, y, method=method, max_iterations=8, verbose=0,
        callbacks=[module.callbacks.BackupAndRestore(directory)])
  assert resumed.epoch == list(range(8))
  assert len(resumed.history["loss"]) == 8
  assert resumed.result.nit == 8
  np.testing.assert_allclose(resumed.history["loss"][:4],
                             full.history["loss"][:4], rtol=1e-12)
  assert resumed.evaluations[:4] == full.evaluations[:4]
  assert resumed.evaluations[4] > resumed.evaluations[3]
  if method == "lbfgs":
    np.testing.assert_allclose(resumed.history["loss"],
                               full.history["loss"], rtol=1e-12)
    assert resumed.evaluations == full.evaluations
    for a, b in zip(resumed_model.get_weights(), reference.get_weights()):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  assert not os.path.exists(directory)


def test_a_backup_of_another_fit_is_refused(tmp_path):
  directory = str(tmp_path / "b")
  with pytest.raises(_Interrupt):
    _fit([keras.callbacks.BackupAndRestore(directory), _InterruptAt(2)])
  keras.utils.set_random_seed(0)
  wider = keras.Sequential([keras.Input((2,)), keras.layers.Dense(9),
                            keras.layers.Dense(1)])
  wider.compile(loss="mse")
  with pytest.raises(ValueError, match="different optimization.*weights"):
    _fit([keras.callbacks.BackupAndRestore(directory)], model=wider)
  with pytest.raises(ValueError, match="different optimization.*method"):
    _fit([keras.callbacks.BackupAndRestore(directory)], method="L-BFGS-B")
  with pytest.raises(ValueError, match="num_correction_pairs"):
    _fit([keras.callbacks.BackupAndRestore(directory)],
         num_correction_pairs=4)
  # The refused fits left the backup as it was.
  assert _backup_meta(directory)["nit"] == 2


def test_damaged_backup(tmp_path):
  directory = tmp_path / "b"
  with pytest.raises(_Interrupt):
    _fit([keras.callbacks.BackupAndRestore(str(directory),
                                           double_checkpoint=True),
          _InterruptAt(3)])
  path = directory / _checkpoint.Backup.BACKUP_FILE
  assert _backup_meta(directory)["nit"] == 3
  path.write_bytes(b"not a backup")
  # double_checkpoint: the backup before it is used, as Keras 3 does.
  seen = []
  _, history = _fit([keras.callbacks.BackupAndRestore(
      str(directory), double_checkpoint=True),
                     keras.callbacks.LambdaCallback(
                         on_epoch_end=lambda epoch, logs: seen.append(epoch))])
  assert seen == list(range(2, 10)) and len(history.history["loss"]) == 10
  # Without it, the damage is reported.
  with pytest.raises(_Interrupt):
    _fit([keras.callbacks.BackupAndRestore(str(directory)), _InterruptAt(3)])
  path.write_bytes(b"not a backup")
  with pytest.raises(ValueError, match="damaged"):
    _fit([keras.callbacks.BackupAndRestore(str(directory))])


@pytest.mark.parametrize("make,match", [
    (lambda d: [keras.callbacks.BackupAndRestore(d),
                keras.callbacks.BackupAndRestore(d + "2")],
     "2 BackupAndRestore"),
    (lambda d: [keras.callbacks.BackupAndRestore(d, save_freq=0)],
     "save_freq must be 'epoch'.*got 0"),
])
def test_bad_backup_arguments(tmp_path, make, match):
  with pytest.raises(ValueError, match=match):
    _fit(make(str(tmp_path / "b")))


def test_save_before_preemption_is_refused(tmp_path):
  keras_model = tf_keras.Sequential([tf_keras.layers.Dense(1,
                                                           input_shape=(2,))])
  keras_model.compile(loss="mse")
  x, y = helpers.data()
  with pytest.raises(ValueError, match="save_before_preemption"):
    tf_extopt.keras.fit(keras_model, x, y, verbose=0, callbacks=[
        tf_keras.callbacks.BackupAndRestore(str(tmp_path),
                                            save_before_preemption=True)])


def test_backup_file_is_json_and_arrays(tmp_path):
  """The archive holds plain arrays and JSON: no pickle on load."""
  directory = str(tmp_path / "b")
  with pytest.raises(_Interrupt):
    _fit([keras.callbacks.BackupAndRestore(directory), _InterruptAt(1)])
  with np.load(os.path.join(directory, _checkpoint.Backup.BACKUP_FILE),
               allow_pickle=False) as archive:
    identity = json.loads(str(archive["identity"]))
    assert "solver" in archive.files
  assert identity["method"] == "lbfgs" and identity["meta"]["nit"] == 1


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_restart_after_the_last_backup_runs_no_iteration(tmp_path, method):
  """Killed after its last save (before the end removed it), a fit started
  again finds the run done: no iteration, the whole history."""
  backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"),
                                            delete_checkpoint=False)
  model, history = _fit([backup], method=method)
  weights = model.get_weights()
  seen = []
  model, again = _fit([backup, keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: seen.append(epoch))], method=method)
  assert seen == []
  assert again.history["loss"] == history.history["loss"]
  assert again.evaluations == history.evaluations
  assert again.result.nit == 10
  for a, b in zip(model.get_weights(), weights):
    np.testing.assert_array_equal(a, b)


def test_interrupted_fit_on_mirrored_strategy_resumes(tmp_path):
  devices = tf.config.list_logical_devices("CPU")[:2]
  strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
  x, y = helpers.data("float64")
  directory = str(tmp_path / "b")

  def fit(callbacks):
    with helpers.floatx("float64"):
      with strategy.scope():
        model = helpers.model()
      return model, tf_extopt.keras.fit(model, x, y, max_iterations=8,
                                        verbose=0, callbacks=callbacks)

  reference, full = fit([])
  with pytest.raises(_Interrupt):
    fit([keras.callbacks.BackupAndRestore(directory, save_freq=2),
         _InterruptAt(4)])
  seen = []
  model, resumed = fit([keras.callbacks.BackupAndRestore(directory,
                                                         save_freq=2),
                        keras.callbacks.LambdaCallback(
                            on_epoch_end=lambda e, logs: seen.append(e))])
  assert seen == [4, 5, 6, 7]
  np.testing.assert_allclose(resumed.history["loss"], full.history["loss"],
                             rtol=1e-12)
  assert resumed.evaluations == full.evaluations
  for a, b in zip(model.get_weights(), reference.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_restore_of_a_start_point_starts_there():
  v, loss = _problem()
  opt = tf_extopt.LbfgsOptimizerInterface(loss, [v], max_iterations=4)
  assert opt.minimize(progress_callback=lambda p: None).nit == 4
  # The state as a run begins: its start point, not yet evaluated.
  start = tf_extopt.LBfgsOptimizerResults(*(
      np.zeros_like(f) for f in opt.state))._replace(
          position=np.full([6], 0.5))
  opt.restore(start)
  seen = []
  opt.minimize(progress_callback=seen.append)
  v.assign(np.full([6], 0.5))
  fresh = []
  tf_extopt.LbfgsOptimizerInterface(loss, [v], max_iterations=4).minimize(
      progress_callback=fresh.append)
  np.testing.assert_allclose([p.x for p in seen], [p.x for p in fresh],
                             rtol=1e-12)


def test_double_backup_keeps_the_one_before_through_a_kill(tmp_path):
  """With `double`, each save renames the last backup to the previous one,
  then writes the new one: a kill between the two leaves only the
  previous one, which the restart reads."""
  backup = _checkpoint.Backup(str(tmp_path), every=1, delete=False,
                              double=True)
  identity = {"fit": "same"}
  arrays = {"w": np.arange(3.0)}
  backup.save(identity, {"nit": 1}, arrays)
  backup.save(identity, {"nit": 2}, dict(arrays, w=arrays["w"] + 1))
  meta, saved = backup.load(identity)
  assert meta["nit"] == 2
  np.testing.assert_array_equal(saved["w"], arrays["w"] + 1)
  os.remove(backup.path)  # As a kill after the rename would leave it.
  meta, saved = backup.load(identity)
  assert meta["nit"] == 1
  np.testing.assert_array_equal(saved["w"], arrays["w"])
