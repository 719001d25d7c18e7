"""Smoke test of the README's main example, at a small batch size."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_runs_and_reports(tmp_path):
  completed = subprocess.run(
      [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"),
       "--batch-size", "8"],
      capture_output=True, text=True, timeout=600, check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  rows = [line for line in completed.stdout.splitlines()
          if line.startswith("| ")]
  bowl = [r for r in rows if "60-D quadratic bowl" in r]
  batch = [r for r in rows if "Rosenbrock-10" in r]
  assert bowl and "| True |" in bowl[0]
  assert batch and "| 8/8 |" in batch[0]
