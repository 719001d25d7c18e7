"""A fit that the preemption tests kill with SIGKILL and start again.

Run by `tests/test_preemption.py` and `tests/test_distribute.py` as

    python _preempted_fit.py OUT [--mode fit|interface] [options]

It trains `_distribute_helpers.model()` (float64) on `_distribute_helpers
.data()` for `--max-iterations` iterations, saving the state as it goes:

* `--mode fit`: `tf_extopt.keras.fit` with a `BackupAndRestore(--backup,
  save_freq=--save-freq)` callback, with `--method` (on-device `'lbfgs'`
  or a SciPy method) and a `--package` (`keras` or `tf_keras`) model.
  With `TF_CONFIG` set, the model is built under a
  `MultiWorkerMirroredStrategy` and each worker writes its own output.
* `--mode interface`: `LbfgsOptimizerInterface` with chunks of
  `--save-freq` iterations, saved by a `tf.train.CheckpointManager` with
  the model at every chunk end, and restored from it at the start.

`--kill-at K` kills the process (SIGKILL: no Python cleanup, no `finally`)
when the callbacks see iteration `K` (zero-based, as Keras counts epochs),
before its backup; `--kill-at-save J` kills it inside the `J`-th save of
the backup (one-based), after the new backup's bytes are written to their
temporary file and before the rename that would make them the backup.
`--kill-worker I` kills only worker `I`. A run that finishes writes
`OUT.npz` (`OUT-<worker>.npz` with several workers): final weights, loss
history, evaluation counts, the epochs this process's callbacks saw, and
the result's `nit` and `nfev`. Every rename of a backup file is logged in
`OUT-renames-<worker>.txt`, so a test can tell which process wrote one.
"""

import argparse
import json
import os
import signal
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import tf_extopt  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_extopt._interface import _checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position
import _distribute_helpers as helpers  # pylint: disable=g-import-not-at-top,wrong-import-position


def _kill():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def _patch_renames(log_path, kill_at_save):
  """Logs every rename onto a backup file; kills inside save `kill_at_save`.

  The kill comes after the temporary file is written and synced and before
  `os.replace` makes it the backup: the one moment a non-atomic save would
  leave a half-written backup.
  """
  real_replace = os.replace
  saves = [0]

  def replace(src, dst, **kwargs):
    name = os.path.basename(str(dst))
    if name == _checkpoint.Backup.BACKUP_FILE:
      saves[0] += 1
      if kill_at_save is not None and saves[0] == kill_at_save:
        _kill()
    if name.startswith(_checkpoint.Backup.BACKUP_FILE):
      with open(log_path, "a") as f:
        f.write("%s\n" % name)
    return real_replace(src, dst, **kwargs)
  os.replace = replace


def _tf_keras_model(seed=3):
  import tf_keras  # pylint: disable=g-import-not-at-top
  tf_keras.backend.set_floatx("float64")
  tf_keras.utils.set_random_seed(seed)
  net = tf_keras.Sequential([
      tf_keras.layers.Dense(8, activation="tanh", input_shape=(2,),
                            kernel_regularizer=tf_keras.regularizers.L2(1e-3)),
      tf_keras.layers.Dense(1),
  ])
  net.compile(loss="mse")
  return net, tf_keras


def _fit(args, strategy, worker):
  x, y = helpers.data("float64")
  seen = []
  with strategy.scope():
    if args.package == "tf_keras":
      model, module = _tf_keras_model()
    else:
      model, module = helpers.model(), keras

  class KillAt(module.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      seen.append(epoch)
      if epoch == args.kill_at and args.kill_worker in (None, worker):
        _kill()

  callbacks = [module.callbacks.BackupAndRestore(
      args.backup, save_freq=args.save_freq), KillAt()]
  history = tf_extopt.keras.fit(model, x, y, method=args.method,
                                max_iterations=args.max_iterations,
                                callbacks=callbacks, verbose=0)
  return dict(weights=model.get_weights(), loss=history.history["loss"],
              evaluations=history.evaluations, epochs=history.epoch,
              seen=seen, nit=history.result.nit, nfev=history.result.nfev)


def _interface(args):
  x, y = helpers.data("float64")
  model = helpers.model()
  every = int(args.save_freq)

  def loss():
    return tf.reduce_mean(tf.square(model(x) - y)) + tf.add_n(model.losses)

  opt = tf_extopt.LbfgsOptimizerInterface(
      loss, model, max_iterations=args.max_iterations,
      iterations_per_call=every)
  checkpoint = tf.train.Checkpoint(model=model, lbfgs=opt)
  manager = tf.train.CheckpointManager(checkpoint, args.backup,
                                       max_to_keep=1)
  checkpoint.restore(manager.latest_checkpoint)
  seen = []

  def progress(p):
    seen.append([p.nit, p.nfev, p.fun])
    if p.nit - 1 == args.kill_at:
      _kill()
    if p.nit % every == 0:
      # A chunk end: the state is the one at this iteration.
      assert int(opt.state.num_iterations) == p.nit
      manager.save()

  result = opt.minimize(progress_callback=progress)
  return dict(weights=model.get_weights(), seen=seen, nit=result.nit,
              nfev=result.nfev)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("out")
  parser.add_argument("--mode", default="fit", choices=["fit", "interface"])
  parser.add_argument("--method", default="lbfgs")
  parser.add_argument("--package", default="keras")
  parser.add_argument("--backup", required=True)
  parser.add_argument("--save-freq", default="epoch")
  parser.add_argument("--max-iterations", type=int, default=20)
  parser.add_argument("--kill-at", type=int)
  parser.add_argument("--kill-at-save", type=int)
  parser.add_argument("--kill-worker", type=int)
  args = parser.parse_args()
  if args.save_freq != "epoch":
    args.save_freq = int(args.save_freq)

  if "TF_CONFIG" in os.environ:
    worker = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    suffix = "-%d" % worker
  else:
    worker, strategy, suffix = 0, tf.distribute.get_strategy(), ""
  kill_at_save = (args.kill_at_save
                  if args.kill_worker in (None, worker) else None)
  _patch_renames("%s-renames-%d.txt" % (args.out, worker), kill_at_save)
  with helpers.floatx("float64"):
    if args.mode == "fit":
      out = _fit(args, strategy, worker)
    else:
      out = _interface(args)
  weights = out.pop("weights")
  np.savez(args.out + suffix + ".npz",
           **{"w%d" % i: w for i, w in enumerate(weights)},
           **{k: np.asarray(v) for k, v in out.items()})


if __name__ == "__main__":
  main()
