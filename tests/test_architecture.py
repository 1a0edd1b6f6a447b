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


PACKAGES = ('models', 'population', 'network', 'wire', 'algorithm', 'placement', 'data',
            'outputs', 'run', 'studies')


def package_of(module: str) -> str:
  """'mhd_jax.algorithm.step' -> 'algorithm'; top-level modules ('mhd_jax.config_base') -> ''."""
  parts = module.split('.')
  return parts[1] if len(parts) > 2 or module.removeprefix('mhd_jax.') in PACKAGES else ''


def allowed_imports() -> dict[str, set[str]]:
  """{package: the packages it may import}, read from the 'May import:' line of each
  package's docstring (the rule is stated once, where a reader of the package sees it)."""
  rules = {}
  for package in PACKAGES:
    doc = ast.get_docstring(ast.parse(open(os.path.join(PACKAGE, package, '__init__.py')).read()))
    line = ' '.join(doc.split()).split('May import: ')[1].split('.')[0]
    rules[package] = ({p.strip().strip('`') for p in line.split(',')} & set(PACKAGES)
                      if not line.startswith('nothing of mhd_jax') else set())
  return rules


def package_violations(graph, rules) -> list[str]:
  """Every import from a package into one its docstring does not allow (config_base, the
  shared leaf, and the top-level package are open to all)."""
  return [f'{m} imports {d}' for m, deps in sorted(graph.items()) for d in sorted(deps)
          if package_of(m) and package_of(d) and package_of(d) != package_of(m)
          and package_of(d) not in rules[package_of(m)]]


def test_every_module_lives_in_a_package():
  assert {m for m in imports() if not package_of(m)} == {'mhd_jax', 'mhd_jax.config_base'}


def test_packages_import_only_what_their_docstring_allows():
  assert not package_violations(imports(), allowed_imports())


def test_package_rules_are_layered():
  """The rules themselves: the algorithm knows no placement or run, placement no run, and
  the allowed imports form no cycle between packages."""
  rules = allowed_imports()
  assert not rules['algorithm'] & {'placement', 'run', 'outputs', 'studies', 'data'}
  assert not rules['placement'] & {'run', 'outputs', 'studies'}
  assert not rules['models'] and not rules['network']
  assert _cycle(rules) is None


def test_placement_and_the_algorithm_stay_apart():
  graph = imports()
  # The layout places clients; it knows nothing of the step or of evaluation.
  assert not _reaches(graph, 'mhd_jax.placement.layout') & {
      'mhd_jax.algorithm.step', 'mhd_jax.algorithm.evaluate', 'mhd_jax.run.programs',
      'mhd_jax.run.train'}
  # Low-level modules do not reach up to the config checks.
  for module in ('mhd_jax.outputs.checkpoint', 'mhd_jax.population.state',
                 'mhd_jax.placement.clients'):
    assert 'mhd_jax.run.config_check' not in _reaches(graph, module), module


def test_the_import_graph_is_read_right():
  """Not vacuous: the parser sees the edges that exist, and a planted cycle or a planted
  climbing import is found."""
  graph = imports()
  assert 'mhd_jax.algorithm.distill' in graph['mhd_jax.algorithm.step']
  assert 'mhd_jax.population.state' in graph['mhd_jax.placement.layout']
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  planted = {**graph, 'mhd_jax.algorithm.step': graph['mhd_jax.algorithm.step']
             | {'mhd_jax.placement.layout'}}
  assert package_violations(planted, allowed_imports()) == [
      'mhd_jax.algorithm.step imports mhd_jax.placement.layout']


def test_no_module_is_over_300_lines():
  long = {m: n for m, path in _paths().items() if (n := len(open(path).readlines())) > 300}
  assert not long, long


def _paths() -> dict[str, str]:
  return {_module_name(os.path.join(folder, name)): os.path.join(folder, name)
          for folder, _, files in os.walk(PACKAGE) for name in files if name.endswith('.py')}


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


def test_docs_architecture_states_each_package_as_its_docstring_does():
  """One section per package, with its docstring's summary and its 'May import:' rule."""
  doc = open(os.path.join(ROOT, 'docs', 'architecture.md')).read()
  for package in PACKAGES:
    docstring = ast.get_docstring(ast.parse(open(os.path.join(PACKAGE, package,
                                                              '__init__.py')).read()))
    summary = ' '.join(docstring.split('\n\n')[0].split())
    rule = ' '.join(docstring.split('May import:')[1].split())
    section = ' '.join(doc.split(f'### `{package}`\n')[1].split('\n#')[0].split())
    assert summary in section and f'May import: {rule}' in section, package
