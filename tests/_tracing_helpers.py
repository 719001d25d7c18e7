"""What a traced function holds, for tests of compilation and trace size."""


def traced_nodes(concrete_function):
  """Every op of a traced function and of the bodies it calls."""
  graph_def = concrete_function.graph.as_graph_def()
  nodes = list(graph_def.node)
  for function in graph_def.library.function:
    nodes += list(function.node_def)
  return nodes


def xla_compiled_calls(concrete_function):
  """How many calls in a traced function (and its bodies) XLA must compile."""
  return sum(1 for node in traced_nodes(concrete_function)
             if "_XlaMustCompile" in node.attr
             and node.attr["_XlaMustCompile"].b)
