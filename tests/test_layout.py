"""The package's two wings keep to their one doorway.

`tf_extopt/_solver/` is L-BFGS and L-BFGS-B on plain tensors;
`tf_extopt/_interface/` (with the public `external_optimizer`,
`lbfgs_interface` and `keras`) adapts variables, Keras models, sessions and
SciPy to it. The interface wing may reach the solver only through the public
solver modules `tf_extopt.lbfgs` and `tf_extopt.lbfgsb`, so the solver's
internals can change without touching the interface. Shared leaf modules at
the top (`_devices`, `_results`, `_validation`) are importable from both
wings.

This test reads the imports with `ast` (nothing is imported) and fails on
any `tf_extopt._solver...` import from the interface wing.
"""

import ast
import os

import pytest

_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tf_extopt")

# The public modules of the interface wing, beside `_interface/`.
_PUBLIC_INTERFACE = ("external_optimizer.py", "lbfgs_interface.py",
                     "keras.py")

# (module, imported name) pairs allowed to break the rule, with the reason.
# Empty: no interface module reaches into the solver today.
_EXCEPTIONS = {}


def _interface_modules():
  folder = os.path.join(_PACKAGE, "_interface")
  paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
           if name.endswith(".py")]
  paths += [os.path.join(_PACKAGE, name) for name in _PUBLIC_INTERFACE]
  return paths


def solver_imports(source):
  """The `tf_extopt._solver...` modules or names an import statement reaches.

  `import tf_extopt._solver._driver`, `from tf_extopt._solver import _driver`
  and `from tf_extopt import _solver` all count, at any depth of the tree
  (imports inside functions too).
  """
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [a.name for a in node.names
                if a.name.startswith("tf_extopt._solver")]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      module = node.module or ""
      if module.startswith("tf_extopt._solver"):
        found += ["%s.%s" % (module, a.name) for a in node.names]
      elif module == "tf_extopt":
        found += ["tf_extopt." + a.name for a in node.names
                  if a.name == "_solver"]
    elif isinstance(node, ast.ImportFrom) and node.level > 0:
      # The package uses absolute imports only; a relative one into the
      # solver would hide from the check above.
      module = node.module or ""
      names = [module] + ["%s.%s" % (module, a.name) for a in node.names]
      found += [n for n in names if n.lstrip(".").startswith("_solver")]
  return found


def test_the_check_sees_every_import_form():
  source = "\n".join([
      "import tf_extopt._solver._driver",
      "from tf_extopt._solver import _driver",
      "from tf_extopt._solver._lbfgsb._dense import solve",
      "from tf_extopt import _solver",
      "def f():",
      "  from tf_extopt._solver import _eager",
      "from tf_extopt import lbfgs",
      "from tf_extopt.lbfgsb import lbfgsb_minimize",
      "from tf_extopt import _results",
  ])
  assert solver_imports(source) == [
      "tf_extopt._solver._driver", "tf_extopt._solver._driver",
      "tf_extopt._solver._lbfgsb._dense.solve", "tf_extopt._solver",
      "tf_extopt._solver._eager"]


def test_the_wings_exist():
  for name in ("_solver", "_interface"):
    assert os.path.isfile(os.path.join(_PACKAGE, name, "__init__.py"))
  # A new wing module must be a package module to ship (setup.py uses
  # find_packages, which skips folders without `__init__.py`).
  assert os.path.isfile(os.path.join(_PACKAGE, "_solver", "_lbfgsb",
                                     "__init__.py"))


@pytest.mark.parametrize(
    "path", _interface_modules(),
    ids=lambda p: os.path.relpath(p, _PACKAGE))
def test_interface_reaches_solver_only_through_lbfgs_and_lbfgsb(path):
  with open(path, encoding="utf-8") as f:
    found = solver_imports(f.read())
  name = os.path.relpath(path, _PACKAGE)
  found = [n for n in found if (name, n) not in _EXCEPTIONS]
  assert not found, (
      "%s imports the solver's internals %s; use tf_extopt.lbfgs."
      "lbfgs_minimize or tf_extopt.lbfgsb.lbfgsb_minimize instead (see "
      "tests/test_layout.py)." % (name, found))


def _solver_modules():
  paths = []
  for folder, _, names in os.walk(os.path.join(_PACKAGE, "_solver")):
    paths += [os.path.join(folder, n) for n in sorted(names)
              if n.endswith(".py")]
  return sorted(paths)


@pytest.mark.parametrize(
    "path", _solver_modules(), ids=lambda p: os.path.relpath(p, _PACKAGE))
def test_solver_knows_nothing_of_the_interface(path):
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  modules = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      modules += [node.module or ""] + [
          "%s.%s" % (node.module, a.name) for a in node.names]
  wrong = [m for m in modules if m.startswith("tf_extopt._interface")
           or m in ("tf_extopt._interface", "tf_extopt.keras",
                    "tf_extopt.external_optimizer",
                    "tf_extopt.lbfgs_interface")]
  assert not wrong, "%s imports the interface wing: %s" % (
      os.path.relpath(path, _PACKAGE), wrong)


def test_evaluators_have_the_protocol_methods():
  # The protocols in `_interface/_evaluators.py` say what `_run` and the
  # interfaces use; both evaluators (and their bound runs) must have it.
  from tf_extopt._interface import _eager_evaluator  # pylint: disable=g-import-not-at-top
  from tf_extopt._interface import _evaluators  # pylint: disable=g-import-not-at-top
  from tf_extopt._interface import _graph_evaluator  # pylint: disable=g-import-not-at-top

  def methods(protocol):
    return [name for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")]

  assert methods(_evaluators.BoundRun) == [
      "value_and_grad", "value", "constraints", "fetch", "read", "assign"]
  for cls in (_graph_evaluator._GraphRun, _eager_evaluator._EagerRun):  # pylint: disable=protected-access
    for name in methods(_evaluators.BoundRun):
      assert callable(getattr(cls, name, None)), (cls, name)
  for cls in (_graph_evaluator.GraphEvaluator,
              _eager_evaluator.EagerEvaluator):
    for name in methods(_evaluators.Evaluator):
      assert callable(getattr(cls, name, None)), (cls, name)
    assert isinstance(cls.compiles_on_first_call, bool)
