"""Full-batch L-BFGS on `tf.distribute` strategies, against one device.

In-process: `MirroredStrategy` over the two logical CPU devices that
`tests/conftest.py` creates, for `ScipyOptimizerInterface`,
`LbfgsOptimizerInterface` and `tf_extopt.keras.fit`, in float32 and
float64. Each run is compared with the same run on one device: the same
iterates (to float64 round-off, or 1e-5 in float32) and the same number of
evaluations. Then the two-process `MultiWorkerMirroredStrategy` run, the
same cluster with a worker killed mid-fit and both restarted (resuming from
`BackupAndRestore`'s backup), and the errors users get.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras
import tf_extopt

import _distribute_helpers as helpers

_RTOL = {tf.float32: 1e-5, tf.float64: 1e-10}
_N = 40


@pytest.fixture(scope="module")
def strategy():
  devices = tf.config.list_logical_devices("CPU")
  assert len(devices) >= 2, "tests/conftest.py should split the CPU in two"
  return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


def _least_squares_data():
  rng = np.random.default_rng(1)
  return rng.normal(size=(_N, 5)), rng.normal(size=(_N,))


def _variable(dtype, strategy=None):
  init = tf.constant([0.5, -0.2, 0.1, 0.3, -0.4], dtype)
  with (strategy or tf.distribute.get_strategy()).scope():
    return tf.Variable(init)


def _loss(v, distributed):
  """A regularized least-squares loss, as one loss or per replica.

  Per replica it is written as in a Keras custom training loop: each
  replica takes every other row and scales with `compute_average_loss`
  and `scale_regularization_loss`, so the replicas' losses sum to the
  one-device loss.
  """
  a, b = _least_squares_data()
  a, b = tf.constant(a, v.dtype), tf.constant(b, v.dtype)

  def loss():
    rows = tf.range(_N)
    if distributed:
      context = tf.distribute.get_replica_context()
      rows = tf.range(context.replica_id_in_sync_group, _N,
                      context.num_replicas_in_sync)
    residual = tf.linalg.matvec(tf.gather(a, rows), v) - tf.gather(b, rows)
    per_example = tf.square(residual)
    regularizer = 1e-2 * tf.reduce_sum(v ** 4)
    if not distributed:
      return tf.reduce_mean(per_example) + regularizer
    return (tf.nn.compute_average_loss(per_example, global_batch_size=_N)
            + tf.nn.scale_regularization_loss(regularizer))
  return loss


_INTERFACES = {
    "lbfgs_interface": lambda loss, v, **kw: tf_extopt.LbfgsOptimizerInterface(
        loss, [v], max_iterations=6, **kw),
    "lbfgsb_interface": lambda loss, v, **kw: (
        tf_extopt.LbfgsOptimizerInterface(
            loss, [v], max_iterations=6, var_to_bounds=[(v, (-0.15, 0.6))],
            **kw)),
    "scipy_interface": lambda loss, v, **kw: tf_extopt.ScipyOptimizerInterface(
        loss, [v], options={"maxiter": 6}, **kw),
}


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
@pytest.mark.parametrize("interface", sorted(_INTERFACES))
def test_interfaces_take_the_one_device_steps(strategy, interface, chunked,
                                              dtype):
  make = _INTERFACES[interface]
  progress = []
  callback = progress.append if chunked else None
  single = _variable(dtype)
  expected = make(_loss(single, False), single).minimize(
      progress_callback=callback)
  mirrored = _variable(dtype, strategy)
  opt = make(_loss(mirrored, True), mirrored)
  assert opt.distribute_strategy is strategy
  one_device_progress, progress[:] = list(progress), []
  result = opt.minimize(progress_callback=callback)
  assert result.nit == expected.nit > 0
  assert result.nfev == expected.nfev
  np.testing.assert_allclose(result.x, expected.x, rtol=_RTOL[dtype])
  np.testing.assert_allclose(result.fun, expected.fun, rtol=_RTOL[dtype])
  for replica_value in strategy.experimental_local_results(mirrored):
    np.testing.assert_array_equal(replica_value.numpy(),
                                  result.x.astype(dtype.as_numpy_dtype))
  # Chunked: the same iterate and count after every iteration, too.
  assert len(progress) == len(one_device_progress) == (
      result.nit if chunked else 0)
  for p, p_expected in zip(progress, one_device_progress):
    assert p.nfev == p_expected.nfev
    np.testing.assert_allclose(p.x, p_expected.x, rtol=_RTOL[dtype])


def _fit(strategy, method, dtype, inputs, **kwargs):
  x, y = helpers.data(dtype)
  if inputs == "dataset":
    data = dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
  elif inputs == "batch_size":
    data = dict(x=x, y=y, batch_size=16)
  else:
    data = dict(x=x, y=y)
  with helpers.floatx(dtype):
    with (strategy or tf.distribute.get_strategy()).scope():
      model = helpers.model()
    history = tf_extopt.keras.fit(model, method=method, max_iterations=5,
                                  verbose=0, **data, **kwargs)
  return model, history


@pytest.mark.parametrize("method,dtype,inputs", [
    ("lbfgs", "float32", "arrays"),
    ("lbfgs", "float64", "arrays"),
    ("L-BFGS-B", "float32", "arrays"),
    ("L-BFGS-B", "float64", "batch_size"),
    ("lbfgs", "float64", "dataset"),
])
def test_keras_fit_takes_the_one_device_steps(strategy, method, dtype,
                                              inputs):
  expected_model, expected = _fit(None, method, dtype, inputs)
  model, history = _fit(strategy, method, dtype, inputs)
  rtol = _RTOL[tf.as_dtype(dtype)]
  # The full-data mean loss (45 samples split 23/22), not a replica's.
  np.testing.assert_allclose(history.history["loss"],
                             expected.history["loss"], rtol=rtol)
  assert history.evaluations == expected.evaluations
  for w, w_expected in zip(model.get_weights(),
                           expected_model.get_weights()):
    np.testing.assert_allclose(w, w_expected, rtol=rtol, atol=rtol)


def test_tf_keras_model(strategy):
  tf_keras = pytest.importorskip("tf_keras")
  x, y = helpers.data()

  def fit(scope):
    with scope:
      tf_keras.utils.set_random_seed(3)
      model = tf_keras.Sequential([
          tf_keras.layers.Dense(
              6, activation="tanh", input_shape=(2,),
              kernel_regularizer=tf_keras.regularizers.L2(1e-3)),
          tf_keras.layers.Dense(1)])
      model.compile(loss="mse")
    return tf_extopt.keras.fit(model, x, y, method="lbfgs", max_iterations=4,
                               verbose=0)

  expected = fit(contextlib.nullcontext())
  history = fit(strategy.scope())
  np.testing.assert_allclose(history.history["loss"],
                             expected.history["loss"], rtol=1e-5)
  assert history.evaluations == expected.evaluations


def test_interface_built_inside_the_scope(strategy):
  with strategy.scope():
    v = _variable(tf.float64)
    opt = tf_extopt.LbfgsOptimizerInterface(_loss(v, True), [v],
                                            max_iterations=6)
    result = opt.minimize()
  single = _variable(tf.float64)
  expected = tf_extopt.LbfgsOptimizerInterface(
      _loss(single, False), [single], max_iterations=6).minimize()
  np.testing.assert_allclose(result.x, expected.x, rtol=1e-10)
  assert result.nfev == expected.nfev


def test_keras_fit_metrics_and_validation(strategy):
  """Metrics and `val_` metrics (through `model.evaluate`) as on one device."""
  x, y = helpers.data()

  def fit(scope):
    with scope:
      model = helpers.model()
      model.compile(loss="mse", metrics=["mae"])
    return tf_extopt.keras.fit(model, x, y, method="lbfgs", max_iterations=3,
                               verbose=0,
                               validation_data=(x[:10], y[:10])).history

  expected = fit(contextlib.nullcontext())
  history = fit(strategy.scope())
  assert sorted(history) == ["loss", "mae", "val_loss", "val_mae"]
  for key, values in expected.items():
    np.testing.assert_allclose(history[key], values, rtol=1e-5, err_msg=key)


def test_keras_fit_stops_on_callback(strategy):
  model, history = _fit(strategy, "lbfgs", "float64", "arrays",
                        callbacks=[helpers.StopAt(1)])
  assert len(history.history["loss"]) == 2
  assert model.stop_training


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_one_model(tmp_path):
  ports = [_free_port(), _free_port()]
  cluster = {"worker": ["127.0.0.1:%d" % p for p in ports]}
  worker = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "_multi_worker.py")
  processes = []
  try:
    for index in range(2):
      env = dict(os.environ, TF_CONFIG=json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}}))
      processes.append(subprocess.Popen(
          [sys.executable, worker, str(tmp_path)], env=env,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, output in zip(processes, outputs):
    assert p.returncode == 0, output[-3000:]
  runs = [np.load(tmp_path / ("worker-%d.npz" % i)) for i in range(2)]
  assert sorted(runs[0].files) == sorted(runs[1].files)
  for key in runs[0].files:
    # The same iterates on both workers, bit for bit.
    np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)

  # And the same as one device.
  x, y = helpers.data()
  for method, callbacks in (("lbfgs", [helpers.StopAt(3)]),
                            ("L-BFGS-B", []), ("batches", [])):
    model = helpers.model()
    history = tf_extopt.keras.fit(
        model, x, y, method="lbfgs" if method == "batches" else method,
        batch_size=16 if method == "batches" else None, max_iterations=6,
        callbacks=callbacks, verbose=0)
    np.testing.assert_allclose(runs[0][method + "_loss"],
                               history.history["loss"], rtol=1e-5)
    np.testing.assert_array_equal(runs[0][method + "_nfev"],
                                  history.evaluations)
    # float32, and the workers sum the gradient in another order than one
    # device does: the weights (of size ~1) agree to a few float32 ulps.
    for i, w in enumerate(model.get_weights()):
      np.testing.assert_allclose(runs[0]["%s_w%d" % (method, i)], w,
                                 rtol=1e-5, atol=1e-5, err_msg=method)
  # The chief's StopAt(3) stopped both workers after 4 iterations.
  assert len(runs[1]["lbfgs_loss"]) == 4
  # Only the chief printed progress, and wrote logs and checkpoints.
  assert "/iteration" in outputs[0] and "loss:" in outputs[0]
  assert "/iteration" not in outputs[1], outputs[1][-2000:]
  for method in ("lbfgs", "L-BFGS-B", "batches"):
    assert (tmp_path / ("%s-0.csv" % method)).exists()
    assert (tmp_path / ("%s-0.weights.h5" % method)).exists()
    assert not (tmp_path / ("%s-1.csv" % method)).exists()
    assert not (tmp_path / ("%s-1.weights.h5" % method)).exists()


def _start_workers(script, args, log_dir, attempt):
  """Starts two workers of one cluster on fresh ports, as a cluster manager
  would (re)start them: `script args` with each worker's `TF_CONFIG`, this
  checkout's `tf_extopt` first on the path, output to `log_dir`."""
  ports = [_free_port(), _free_port()]
  cluster = {"worker": ["127.0.0.1:%d" % p for p in ports]}
  path = os.path.dirname(os.path.dirname(os.path.abspath(
      tf_extopt.__file__)))
  processes = []
  for index in range(2):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [path] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               TF_CONFIG=json.dumps({"cluster": cluster, "task": {
                   "type": "worker", "index": index}}))
    log = open(os.path.join(log_dir, "log-%s-%d.txt" % (attempt, index)),
               "wb")
    processes.append((subprocess.Popen(
        [sys.executable, script] + [str(a) for a in args], env=env,
        stdout=log, stderr=subprocess.STDOUT), log))
  return processes


def _stop(processes):
  """Kills what still runs of `processes` and closes their logs."""
  for p, log in processes:
    if p.poll() is None:
      p.kill()
    p.wait()
    log.close()


@pytest.mark.slow
def test_killed_worker_and_restarted_cluster_resume_from_the_backup(
    tmp_path):
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "_preempted_fit.py")
  iterations = 20
  backup = tmp_path / "backup"
  command = [tmp_path / "run", "--backup", backup, "--max-iterations",
             iterations]
  # Worker 1 is killed at iteration 7; the chief then waits on it in an
  # all-reduce (or fails), and is killed too, as a cluster manager does
  # before starting the job again.
  processes = _start_workers(
      script, command + ["--kill-at", 7, "--kill-worker", 1], tmp_path,
      "killed")
  try:
    assert processes[1][0].wait(timeout=300) == -signal.SIGKILL, (
        (tmp_path / "log-killed-1.txt").read_text()[-3000:])
  finally:
    _stop(processes)
  assert os.listdir(backup) == ["tf_extopt_fit_backup.npz"]
  # Only the chief wrote backups.
  assert (tmp_path / "run-renames-0.txt").exists()
  assert not (tmp_path / "run-renames-1.txt").exists()

  processes = _start_workers(script, command, tmp_path, "restarted")
  try:
    for p, _ in processes:
      p.wait(timeout=300)
  finally:
    _stop(processes)
  for index, (p, _) in enumerate(processes):
    assert p.returncode == 0, (
        tmp_path / ("log-restarted-%d.txt" % index)).read_text()[-3000:]
  runs = [dict(np.load(tmp_path / ("run-%d.npz" % i))) for i in range(2)]
  for key in runs[0]:
    # The same iterates on both workers, bit for bit.
    np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)
  # Both resumed from the chief's last backup: after iteration 7 (where
  # worker 1 died), or 8 if the chief had saved that one before it
  # noticed.
  resumed_at = int(runs[0]["seen"][0])
  assert resumed_at in (7, 8)
  np.testing.assert_array_equal(runs[0]["seen"],
                                np.arange(resumed_at, iterations))
  np.testing.assert_array_equal(runs[0]["epochs"], np.arange(iterations))
  assert not (tmp_path / "run-renames-1.txt").exists()
  assert not backup.exists()  # The chief deleted it at the end.

  # And the uninterrupted run's weights, history and counts, as on one
  # device (the workers sum the gradient in another order: round-off).
  x, y = helpers.data("float64")
  with helpers.floatx("float64"):
    model = helpers.model()
    history = tf_extopt.keras.fit(model, x, y, method="lbfgs",
                                  max_iterations=iterations, verbose=0)
  np.testing.assert_allclose(runs[0]["loss"], history.history["loss"],
                             rtol=1e-10)
  np.testing.assert_array_equal(runs[0]["evaluations"], history.evaluations)
  for i, w in enumerate(model.get_weights()):
    np.testing.assert_allclose(runs[0]["w%d" % i], w, rtol=1e-8, atol=1e-10)


# --- What is refused ---------------------------------------------------------


def test_strategy_of_the_wrong_type():
  v = _variable(tf.float64)
  with pytest.raises(TypeError, match="distribute_strategy must be a "
                     "tf.distribute.Strategy or None; got str"):
    tf_extopt.ScipyOptimizerInterface(_loss(v, False), [v],
                                      distribute_strategy="mirrored")


def test_variables_not_created_under_the_strategy(strategy):
  v = _variable(tf.float64)
  with pytest.raises(ValueError, match=r"has 2 replicas, but the variables "
                     r"in var_list were not created under its scope"):
    tf_extopt.LbfgsOptimizerInterface(_loss(v, True), [v],
                                      distribute_strategy=strategy)


def test_another_strategy_than_the_variables(strategy):
  v = _variable(tf.float64, strategy)
  other = tf.distribute.MirroredStrategy(strategy.extended.worker_devices)
  with pytest.raises(ValueError, match="not the strategy whose scope created "
                     "the variables"):
    tf_extopt.ScipyOptimizerInterface(_loss(v, True), [v],
                                      distribute_strategy=other)
  w = _variable(tf.float64, other)
  with pytest.raises(ValueError, match="created under 2 different"):
    tf_extopt.ScipyOptimizerInterface(lambda: v[0] + w[0], [v, w])


def test_parameter_server_strategy_is_refused():
  # The TF1 class builds without a cluster (on local devices); TF2's
  # connects to one first. Both are refused by the same rule.
  parameter_server = (
      tf.compat.v1.distribute.experimental.ParameterServerStrategy())
  v = _variable(tf.float64)
  with pytest.raises(ValueError, match="ParameterServerStrategyV1 is not "
                     "supported.*Use MirroredStrategy"):
    tf_extopt.LbfgsOptimizerInterface(_loss(v, False), [v],
                                      distribute_strategy=parameter_server)


def test_jit_compile_across_replicas_is_refused(strategy):
  v = _variable(tf.float64, strategy)
  with pytest.raises(ValueError, match="jit_compile=True cannot be combined "
                     "with MirroredStrategy over 2 replicas"):
    tf_extopt.LbfgsOptimizerInterface(_loss(v, True), [v], jit_compile=True)
  with strategy.scope():
    model = helpers.model()
  x, y = helpers.data()
  start = model.get_weights()
  with pytest.raises(ValueError, match="jit_compile=True cannot be combined"):
    tf_extopt.keras.fit(model, x, y, jit_compile=True, verbose=0)
  for w, w_start in zip(model.get_weights(), start):
    np.testing.assert_array_equal(w, w_start)


def test_graph_mode_is_refused(strategy):
  with tf.Graph().as_default():
    v = tf.compat.v1.Variable([1., 2.], use_resource=True)
    loss = tf.reduce_sum(v ** 2)
    with pytest.raises(ValueError, match="eager mode \\(TF2\\) only"):
      tf_extopt.ScipyOptimizerInterface(loss, [v],
                                        distribute_strategy=strategy)


@pytest.mark.parametrize("interface", ["lbfgs_interface", "scipy_interface"])
def test_loss_not_scalar_per_replica(strategy, interface):
  v = _variable(tf.float64, strategy)
  start = v.numpy()
  opt = _INTERFACES[interface](lambda: tf.square(v), v)
  with pytest.raises(ValueError, match=r"loss must be a scalar; got shape "
                     r"\(5,\)"):
    opt.minimize()
  np.testing.assert_array_equal(v.numpy(), start)


def test_infinite_dataset_is_refused(strategy):
  with strategy.scope():
    model = helpers.model()
  x, y = helpers.data()
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
  with pytest.raises(ValueError, match="x is an infinite tf.data.Dataset"):
    tf_extopt.keras.fit(model, dataset, verbose=0)


# --- A strategy's scope the variables were not created under -----------------

_FOREIGN_SCOPE = (r"was called inside the scope of MirroredStrategy \(2 "
                  r"replicas\), but the variables were created outside any "
                  r"tf.distribute strategy's scope.*silently scaled")


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_keras_fit_refuses_a_foreign_scope(strategy, package, method):
  """Keras divides a loss computed under a strategy's scope by its replicas:
  a model built outside the scope would be fitted to half its loss."""
  x, y = helpers.data()
  if package == "keras":
    model = helpers.model()
  else:
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
    model.compile(loss="mse")
  start = model.get_weights()
  with strategy.scope():
    with pytest.raises(ValueError, match="tf_extopt.keras.fit " +
                       _FOREIGN_SCOPE):
      tf_extopt.keras.fit(model, x, y, method=method, max_iterations=2,
                          verbose=0)
  for w, w_start in zip(model.get_weights(), start):
    np.testing.assert_array_equal(w, w_start)


@pytest.mark.parametrize("interface", sorted(_INTERFACES))
def test_interfaces_refuse_a_foreign_scope(strategy, interface):
  model = helpers.model()
  x, y = (tf.constant(a) for a in helpers.data())
  loss = lambda: model.compute_loss(x=x, y=y, y_pred=model(x), training=True)
  variable = model.trainable_variables[0]
  with strategy.scope():  # Built there.
    with pytest.raises(ValueError, match=_FOREIGN_SCOPE):
      _INTERFACES[interface](loss, variable)
  opt = _INTERFACES[interface](loss, variable)
  with strategy.scope():  # Minimized there: the loss is traced there.
    with pytest.raises(ValueError, match=r"\.minimize\(\) " +
                       _FOREIGN_SCOPE):
      opt.minimize()
  # Outside the scope the loss is the true one, not half of it.
  assert opt.minimize().fun == pytest.approx(
      float(model.compute_loss(x=x, y=y, y_pred=model(x))), rel=1e-6)


@pytest.mark.parametrize("method", ["lbfgs", "L-BFGS-B"])
def test_keras_fit_one_sample_on_two_replicas(strategy, method):
  """One in-memory sample: the second replica's share is empty."""
  x, y = helpers.data()

  def fit(scope):
    with scope:
      model = helpers.model()
    return tf_extopt.keras.fit(model, x[:1], y[:1], method=method,
                               max_iterations=3, verbose=0)

  expected = fit(contextlib.nullcontext())
  history = fit(strategy.scope())
  assert history.history["loss"]
  np.testing.assert_allclose(history.history["loss"],
                             expected.history["loss"], rtol=1e-5)
  assert history.evaluations == expected.evaluations


def test_batch_normalization_statistics_per_replica(strategy):
  """Documented: in training mode each replica normalizes its share with its
  own batch statistics, as Keras' fit does; `synchronized=True` uses the
  global batch's, and then two replicas take one device's steps."""
  x, y = helpers.data()

  def fit(scope, synchronized):
    with scope:
      keras.utils.set_random_seed(0)
      model = keras.Sequential([
          keras.Input((2,)), keras.layers.Dense(4),
          keras.layers.BatchNormalization(synchronized=synchronized),
          keras.layers.Dense(1)])
      model.compile(loss="mse")
    return tf_extopt.keras.fit(model, x, y, method="lbfgs", max_iterations=3,
                               verbose=0).history["loss"]

  one_device = fit(contextlib.nullcontext(), False)
  per_replica = fit(strategy.scope(), False)
  assert abs(per_replica[0] - one_device[0]) > 1e-3 * one_device[0]
  np.testing.assert_allclose(fit(strategy.scope(), True), one_device,
                             rtol=1e-5)
