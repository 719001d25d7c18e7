"""One worker of the two-process `MultiWorkerMirroredStrategy` test.

Run by `tests/test_distribute.py` with `TF_CONFIG` set, as
`python _multi_worker.py OUT_DIR`. It fits `_distribute_helpers.model()`
with `tf_extopt.keras.fit` three times (on-device L-BFGS, SciPy's
L-BFGS-B, and on-device L-BFGS over batches of 16)
and saves the weights, losses and evaluation counts to
`OUT_DIR/worker-<index>.npz`. Only the chief gets the `StopAt` callback;
every worker gets a `CSVLogger` and a `ModelCheckpoint`, which only the
chief may write, and `verbose=2`, whose lines only the chief may print.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import tf_extopt  # pylint: disable=g-import-not-at-top,wrong-import-position
import _distribute_helpers as helpers  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(out_dir):
  index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  x, y = helpers.data()
  saved = {}
  for method, stop_at in (("lbfgs", 3), ("L-BFGS-B", None),
                          ("batches", None)):
    with strategy.scope():
      model = helpers.model()
    callbacks = [
        keras.callbacks.CSVLogger(
            os.path.join(out_dir, "%s-%d.csv" % (method, index))),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out_dir, "%s-%d.weights.h5" % (method, index)),
            save_weights_only=True)]
    if stop_at is not None and index == 0:
      callbacks.append(helpers.StopAt(stop_at))
    # A progress bar is asked for on every worker; only the chief's shows.
    data = dict(x=x, y=y)
    if method == "batches":
      # On-device L-BFGS again, the strategy splitting batches of 16.
      data["batch_size"] = 16
    history = tf_extopt.keras.fit(
        model, method="lbfgs" if method == "batches" else method,
        max_iterations=6, callbacks=callbacks, verbose=2, **data)
    for i, w in enumerate(model.get_weights()):
      saved["%s_w%d" % (method, i)] = w
    saved[method + "_loss"] = np.array(history.history["loss"])
    saved[method + "_nfev"] = np.array(history.evaluations)
  np.savez(os.path.join(out_dir, "worker-%d.npz" % index), **saved)


if __name__ == "__main__":
  main(sys.argv[1])
