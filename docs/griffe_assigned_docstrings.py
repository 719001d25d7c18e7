"""Griffe extension: docstrings assigned as `Name.__doc__ = "..."`.

`LBfgsOptimizerResults` is a namedtuple, and its docstring is assigned after
the call that makes it. Griffe reads the sources without importing them, so
it does not see that assignment; this extension finds module-level
`Name.__doc__ = "<string>"` statements and gives `Name` that docstring,
keeping the docs build static (no TensorFlow import).
"""

import ast

import griffe


class AssignedDocstrings(griffe.Extension):
  """Sets the docstring of `Name` from a module-level `Name.__doc__ = ...`."""

  def on_module(self, *, mod, **kwargs):
    del kwargs
    if not mod.filepath or not str(mod.filepath).endswith(".py"):
      return
    tree = ast.parse(mod.filepath.read_text(encoding="utf-8"))
    for node in tree.body:
      if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        continue
      target = node.targets[0]
      if not (isinstance(target, ast.Attribute) and target.attr == "__doc__"
              and isinstance(target.value, ast.Name)
              and isinstance(node.value, ast.Constant)
              and isinstance(node.value.value, str)):
        continue
      name = target.value.id
      if name in mod.members:
        member = mod.members[name]
        member.docstring = griffe.Docstring(
            node.value.value, lineno=node.lineno, endlineno=node.end_lineno,
            parent=member)
