"""Runs one test file under pytest; the entry point of the Bazel py_tests."""

import sys

import pytest

if __name__ == "__main__":
  sys.exit(pytest.main(["-q"] + sys.argv[1:]))
