"""Smoke tests of `benchmarks/time_to_loss.py`: it runs, its tables parse.

The benchmark's numbers are times, which no test asserts on; these check
the tables' shape and the bookkeeping that turns runs into them (targets,
least time to a target, speed-ups, "not reached").
"""

import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_ROOT, "benchmarks", "time_to_loss.py")
_HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
_KERAS_PATHS = ("on-device", "on-device XLA", "SciPy", "TFP", "keras.fit",
                "keras.fit lbfgs", "keras.fit XLA", "keras.fit L-BFGS-B")
_CELL = re.compile(r"^(not reached|\d+\.\d+ s \((\d+\.\d+x|n/a)\))$")


def _load():
  spec = importlib.util.spec_from_file_location("time_to_loss", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cells(line):
  return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_quick_run_prints_a_row_per_path(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_ROOT)
  proc = subprocess.run(
      [sys.executable, _SCRIPT, "--quick", "--models", "mlp_small", "--out",
       str(tmp_path)],
      capture_output=True, text=True, env=env, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = proc.stdout
  assert out.startswith("`python ")
  assert "--quick --models mlp_small" in out.splitlines()[0]
  lines = out.splitlines()
  header = next(i for i, line in enumerate(lines)
                if line.startswith("| path |"))
  columns = _cells(lines[header])
  # Two budgets (--quick), each a target the SciPy path reached.
  targets = [re.match(r"^(\d+) it\.: (\S+)$", c) for c in columns[1:3]]
  assert [int(m[1]) for m in targets] == [5, 10]
  assert all(math.isfinite(float(m[2])) for m in targets)
  rows = {}
  for line in lines[header + 2:]:
    if not line.startswith("|"):
      break
    cells = _cells(line)
    rows[cells[0]] = cells
  assert tuple(rows) == _KERAS_PATHS
  for path, cells in rows.items():
    assert len(cells) == len(columns), path
    for cell in cells[1:3]:
      assert _CELL.match(cell), (path, cell)
    assert float(cells[3]) >= 1  # Evaluations per iteration.
    float(cells[4])  # The first call's seconds.
  # The targets are SciPy's own losses, so it reaches each one, and being a
  # baseline it is never faster than the best baseline.
  for cell in rows["SciPy"][1:3]:
    assert cell != "not reached"
    assert float(re.search(r"\((\S+)x\)", cell)[1]) <= 1.0
  # keras.fit builds a new interface at every call: no second call.
  assert rows["keras.fit"][5] == "n/a"
  float(rows["on-device"][5])
  summary = [line for line in lines if line.startswith("| mlp_small |")]
  assert [_cells(line)[1] for line in summary] == list(_KERAS_PATHS)
  if _HAVE_MPL:
    assert os.path.getsize(tmp_path / "time_to_loss_mlp_small.png") > 0


def test_least_time_to_each_target():
  ttl = _load()
  nan = float("nan")
  runs = [
      # SciPy sets the targets: 1.0 after 10 iterations, 0.5 after 20.
      ttl.Run("SciPy", 10, 2.0, 1.0, 10, 11),
      ttl.Run("SciPy", 20, 4.0, 0.5, 20, 22),
      ttl.Run("TFP", 10, 3.0, 0.9, 10, 30),
      ttl.Run("TFP", 20, 6.0, 0.6, 20, 60),
      # Ours reaches the first target only at its second budget, and the
      # second never; its faster run is the one that counts.
      ttl.Run("ours", 10, 1.5, 2.0, 10, 20),
      ttl.Run("ours", 20, 1.0, 0.7, 20, 40),
      ttl.Run("broken", 10, 0.1, nan, nan, nan, error="ValueError: no"),
  ]
  measured = ttl.Measured("m", "a model", 3.0, ["SciPy", "TFP", "ours",
                                                "broken"],
                          ["SciPy", "TFP"], "SciPy", runs, {}, [])
  assert ttl.targets(measured) == {10: 1.0, 20: 0.5}
  table = ttl.speed_ups(measured)
  assert table["SciPy"] == {10: (2.0, 1.0), 20: (4.0, 1.0)}
  assert table["TFP"] == {10: (3.0, 2.0 / 3.0), 20: (None, None)}
  assert table["ours"] == {10: (1.0, 2.0), 20: (None, None)}
  assert table["broken"] == {10: (None, None), 20: (None, None)}
  assert ttl.evaluations_per_iteration(measured, "TFP") == 3.0
  assert ttl.evaluations_per_iteration(measured, "broken") is None
