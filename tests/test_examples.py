"""Smoke tests: every example runs with its --small flag and does its job.

The examples are run in-process through their `main(argv)` (the legacy TF1
one in a subprocess, because it switches off TF2 behaviour for the whole
process, and the distributed one, whose strategy must be the process's
only one). Plots are written when matplotlib is installed and skipped, with a
message, when it is not; the assertions are on what the examples compute.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXAMPLES = os.path.join(_ROOT, "examples")
_HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def _load(name):
  spec = importlib.util.spec_from_file_location(
      "example_" + name, os.path.join(_EXAMPLES, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _check_plot(result, name):
  if _HAVE_MPL:
    assert result["plot"] is not None
    assert os.path.getsize(result["plot"]) > 0
    assert os.path.basename(result["plot"]) == name + ".png"
  else:
    assert result["plot"] is None


def test_keras_regression(tmp_path, capsys):
  result = _load("keras_regression").main(["--small", "--out",
                                           str(tmp_path)])
  out = capsys.readouterr().out
  assert "L-BFGS:" in out and "Adam only:" in out
  # L-BFGS improved on the Adam warm start, and beat Adam given the same
  # number of evaluations.
  assert result["lbfgs_loss"] < result["warm_loss"]
  assert result["lbfgs_loss"] < result["adam_loss"]
  _check_plot(result, "keras_regression")


def test_keras_regression_without_plot(tmp_path):
  module = _load("keras_regression")
  assert module.plot  # The plotting helper exists but is not called.
  result = module.main(["--small", "--no-plot", "--out",
                        str(tmp_path / "none")])
  assert result["plot"] is None
  assert not os.path.exists(tmp_path / "none")


@pytest.mark.slow
def test_pinn_burgers(tmp_path, capsys):
  result = _load("pinn_burgers").main(["--small", "--out", str(tmp_path)])
  out = capsys.readouterr().out
  assert "relative L2 error" in out
  assert result["lbfgs_loss"] < result["adam_loss"]
  assert result["lbfgs_error"] < result["adam_error"]
  assert result["iterations"] > 0
  _check_plot(result, "pinn_burgers")


@pytest.mark.slow
def test_batched_curve_fit(tmp_path, capsys):
  result = _load("batched_curve_fit").main(["--small", "--out",
                                            str(tmp_path)])
  out = capsys.readouterr().out
  assert "Batched lbfgs_minimize" in out and "SciPy" in out
  # The batched call reaches SciPy's minimum on (almost) every curve.
  assert result["converged"] >= 0.9
  assert result["agree"] >= 0.9
  assert np.median(result["batched_loss"] - result["scipy_loss"]) < 1e-8
  _check_plot(result, "batched_curve_fit")


def test_legacy_tf1_session(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_ROOT)
  proc = subprocess.run(
      [sys.executable, os.path.join(_EXAMPLES, "legacy_tf1_session.py"),
       "--small", "--out", str(tmp_path)],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "ScipyOptimizerInterface: w =" in out
  assert "LbfgsOptimizerInterface: w =" in out
  difference = float(re.search(r"max \|scipy - lbfgs\| = (\S+)", out)[1])
  error = float(re.search(r"max \|scipy - true\| = (\S+)", out)[1])
  # Both interfaces solve the same least-squares problem.
  assert difference < 1e-3
  assert error < 0.05
  if _HAVE_MPL:
    assert os.path.exists(tmp_path / "legacy_tf1_session.png")


def _main_in_subprocess(name, argv):
  """`_load(name).main(argv)` in a fresh interpreter: `(result, stdout)`.

  The result's arrays come back as lists (through JSON).
  """
  code = ("import json, sys; sys.path.insert(0, %r); "
          "from test_examples import _load; "
          "result = _load(%r).main(%r); "
          "print('RESULT=' + json.dumps(result, default=lambda a: "
          "a.tolist() if hasattr(a, 'tolist') else float(a)))" % (
              os.path.dirname(os.path.abspath(__file__)), name, argv))
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT=")][-1]
  return json.loads(line[len("RESULT="):]), proc.stdout


def test_distributed_fit():
  # In a process of its own: the example makes its own MirroredStrategy,
  # and TF gives the collective all-reduces of two strategies over the same
  # devices in one process the same instance keys, so one that an earlier
  # test ran (synchronized batch normalization) breaks this one's.
  result, out = _main_in_subprocess("distributed_fit", ["--small"])
  assert "MirroredStrategy over" in out
  mirrored, one_device = result["keras_fit"]
  assert len(mirrored) == len(one_device) == 20
  # L-BFGS improved on Adam's end point, and 2 replicas followed one device
  # (float32 round-off, grown over 20 Adam epochs and 20 iterations).
  assert mirrored[-1] < mirrored[0]
  np.testing.assert_allclose(mirrored, one_device, rtol=1e-3)
  np.testing.assert_allclose(*result["custom_loss"], rtol=1e-3)
