"""What a traced function asks of XLA, for tests of `compile_update`."""


def xla_compiled_calls(concrete_function):
  """How many calls in a traced function (and its bodies) XLA must compile."""
  graph_def = concrete_function.graph.as_graph_def()
  nodes = list(graph_def.node)
  for function in graph_def.library.function:
    nodes += list(function.node_def)
  return sum(1 for node in nodes
             if "_XlaMustCompile" in node.attr
             and node.attr["_XlaMustCompile"].b)
