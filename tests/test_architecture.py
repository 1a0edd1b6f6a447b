"""The layering of docs/architecture.md holds: no import cycle, placement apart from the algorithm."""

import ast
import os

from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, 'mhd_jax')


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def imports() -> dict[str, set[str]]:
  """{module: the mhd_jax modules it imports}, every import statement counted (also inside
  functions: a cycle through a deferred import is still a cycle of the design)."""
  graph = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        module, found = _module_name(path), set()
        package = module if name == '__init__.py' else module.rsplit('.', 1)[0]
        for node in ast.walk(ast.parse(open(path).read())):
          if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
              base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1]
                              + ([base] if base else []))
            for alias in node.names:  # a submodule, or a name defined in the module `base`
              found.add(f'{base}.{alias.name}' if os.path.exists(os.path.join(
                  ROOT, *f'{base}.{alias.name}'.split('.'))) or os.path.exists(os.path.join(
                      ROOT, *f'{base}.{alias.name}'.split('.')) + '.py') else base)
          elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        graph[module] = found
  modules = set(graph)
  return {m: {d for d in deps if d in modules and d != m} for m, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == 'open':
        return stack[stack.index(d):] + [d]
      if d not in state and (found := visit(d)):
        return found
    state[m] = 'done'
    stack.pop()
    return None

  for m in sorted(graph):
    if m not in state and (found := visit(m)):
      return found
  return None


def _reaches(graph, start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for d in graph[todo.pop()]:
      if d not in seen:
        seen.add(d)
        todo.append(d)
  return seen


def test_no_import_cycle():
  cycle = _cycle(imports())
  assert cycle is None, ' -> '.join(cycle)


def test_placement_and_the_algorithm_stay_apart():
  graph = imports()
  # The layout places clients; it knows nothing of the step or of evaluation.
  assert not _reaches(graph, 'mhd_jax.layout') & {'mhd_jax.step', 'mhd_jax.evaluate',
                                                   'mhd_jax.programs', 'mhd_jax.train'}
  # The step and the distillation know nothing of meshes, padding or the run.
  for module in ('mhd_jax.step', 'mhd_jax.distill', 'mhd_jax.losses'):
    assert not _reaches(graph, module) & {'mhd_jax.layout', 'mhd_jax.programs', 'mhd_jax.train',
                                          'mhd_jax.checkpoint'}, module
  # Low-level modules do not reach up to the config checks.
  for module in ('mhd_jax.checkpoint', 'mhd_jax.state', 'mhd_jax.clients'):
    assert 'mhd_jax.config_check' not in _reaches(graph, module), module


def test_the_import_graph_is_read_right():
  """Not vacuous: the parser sees the edges that exist, and a planted cycle is found."""
  graph = imports()
  assert 'mhd_jax.distill' in graph['mhd_jax.step']
  assert 'mhd_jax.state' in graph['mhd_jax.layout']
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_docs_architecture_names_every_module():
  table = open(os.path.join(ROOT, 'docs', 'architecture.md')).read()
  missing = [m for m in imports() if m != 'mhd_jax'
             and f'`{m.removeprefix("mhd_jax.")}`' not in table]
  assert not missing, f'docs/architecture.md does not name {missing}'


def test_docs_architecture_imports_column_is_the_import_graph():
  rows = {}
  for line in open(os.path.join(ROOT, 'docs', 'architecture.md')):
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) == 3 and cells[0].startswith('`'):
      deps = set() if cells[2] in ('—', '') else {d.strip() for d in cells[2].split(',')}
      for name in cells[0].replace('`', '').split(','):
        rows[f'mhd_jax.{name.strip()}'] = deps
  graph = imports()
  wrong = {m: (sorted(rows[m]), sorted(d.removeprefix('mhd_jax.') for d in graph[m]))
           for m in rows if m in graph and rows[m] != {d.removeprefix('mhd_jax.') for d in graph[m]}}
  assert not wrong, f'docs/architecture.md imports differ (table, code): {wrong}'
