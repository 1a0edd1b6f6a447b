"""How the stacked clients run: one function applied to every client's slice (`map_clients`).

The strategies compute the same function and differ in the program XLA gets
(see `map_clients`); `hybrid` patches JAX's batching rule for convolutions
while it traces. `for_each_client` adds where the clients live: under a device
mesh each device runs only its own clients (`shard_map` over the client axis).
"""

import contextlib
import functools
from typing import Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ('auto', 'vmap', 'hybrid', 'loop')  # map_clients dispatches on these


def resolve_strategy(strategy: str, backend: str | None = None,
                     convolutions: bool = True) -> str:
  """The strategy to run; 'auto' by a static rule for the backend and model.

  (A run with `strategy_measure_steps` > 0 measures instead, `autotune`; this
  rule is for models without convolutions, for short runs, and for callers
  that cannot run the step, such as `map_clients`.)

  CPU, model with convolutions: 'loop'. Measured on 2 CPU cores (README,
  "Scale"), 4 ResNet-18 clients (CIFAR stem, width 16, batch 32): the stacked
  step took 0.87x the time of 4 single-client steps with 'loop', 1.02x with
  'hybrid' and 16.7x with 'vmap' (grouped convolutions, slow on XLA:CPU);
  'loop' compiles slowest (44 s against 23 s for 'hybrid', compiling two
  programs at a time), and its compile time grows with the clients per device. CPU without convolutions: 'vmap'
  (one batched matmul per layer beats N small ones). Accelerators: 'vmap',
  which compiles once whatever the number of clients and where grouped
  convolutions are native (not measured in this repository:
  `benchmarks/client_scaling.py --strategies=vmap,hybrid,loop` measures them
  on the machine at hand).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f'unknown strategy {strategy!r}; choose one of {", ".join(STRATEGIES)}.')
  if strategy == 'hybrid' and not hybrid_available():
    return 'loop'
  if strategy != 'auto':
    return strategy
  backend = backend or jax.default_backend()
  return 'loop' if backend == 'cpu' and convolutions else 'vmap'


def uses_convolutions(fn: Callable, *args) -> bool:
  """Whether `fn(*args)` contains a convolution (traced abstractly, nothing runs)."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))
                          if not isinstance(x, jax.ShapeDtypeStruct) else x, args)
  return 'conv_general_dilated' in str(jax.make_jaxpr(fn)(*abstract))


def strategy_for(strategy: str, specs: Sequence, image_shape) -> str:
  """`resolve_strategy` for a population's models on images of `image_shape`."""
  if strategy != 'auto':
    return resolve_strategy(strategy)
  def apply(model, variables, x):
    return model.apply(variables, x, train=False)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  convolutions = False
  for spec in specs:
    variables = jax.eval_shape(lambda m=spec.model: m.init(jax.random.PRNGKey(0), x, train=False))
    convolutions |= uses_convolutions(functools.partial(apply, spec.model), variables, x)
  return resolve_strategy(strategy, convolutions=convolutions)


# `hybrid` swaps, while it traces, the rule that batches convolutions under
# vmap: JAX's rule turns per-client kernels into one grouped convolution, which
# XLA:CPU runs an order of magnitude slower than the same convolutions one by
# one. The table of batching rules is internal to JAX (checked for jax 0.10 to
# 0.12.0.1); if it moves, 'hybrid' says so in one warning and runs as 'loop'
# (`hybrid_available`).
from jax._src.interpreters import batching as _batching  # pylint: disable=g-import-not-at-top,g-bad-import-order
try:
  from jax.extend.core.primitives import conv_general_dilated_p as _CONV_P  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - depends on the JAX version
  _CONV_P = None
_warned_hybrid = False


def _conv_batchers() -> dict | None:
  """JAX's table of batching rules, if it still holds the convolution's rule (else None)."""
  table = getattr(_batching, 'fancy_primitive_batchers', None)
  return table if isinstance(table, dict) and _CONV_P in table else None


def hybrid_available() -> bool:
  """Whether 'hybrid' can patch this JAX; warns once (one line) when it cannot."""
  global _warned_hybrid
  if _conv_batchers() is not None:
    return True
  if not _warned_hybrid:
    _warned_hybrid = True
    logging.warning("strategy 'hybrid' needs jax._src.interpreters.batching."
                    'fancy_primitive_batchers[conv_general_dilated_p], which jax %s lacks; '
                    "running 'loop' instead.", jax.__version__)
  return False


def _unstack(x, axis: int = 0) -> list[jax.Array]:
  """x[i] for every i along `axis`, as one split: its transpose is one concatenate.

  (Indexing client by client instead transposes to one zero-padded full-size
  array per client, which makes the backward pass quadratic in the clients.)
  """
  n = x.shape[axis]
  return [jnp.squeeze(part, axis) for part in jax.lax.split(x, [1] * n, axis=axis)]


def _conv_per_client(default_rule, axis_data, args, dims, **params):
  """Batching rule: a convolution whose input and kernel both carry clients runs per client."""
  (lhs, rhs), (lhs_dim, rhs_dim) = args, dims
  if lhs_dim is None or rhs_dim is None:  # shared kernel or shared input: no grouping needed
    return default_rule(axis_data, args, dims, **params)
  outs = [_CONV_P.bind(l, r, **params)
          for l, r in zip(_unstack(lhs, lhs_dim), _unstack(rhs, rhs_dim))]
  return jnp.stack(outs), 0


@contextlib.contextmanager
def _convolutions_per_client():
  table = _conv_batchers()
  default_rule = table[_CONV_P]
  table[_CONV_P] = functools.partial(_conv_per_client, default_rule)
  try:
    yield
  finally:
    table[_CONV_P] = default_rule


def map_clients(fn: Callable, strategy: str, *args, in_axes=0):
  """Applies `fn` to each client's slice of `args` and stacks the results.

  `in_axes` follows `jax.vmap` (0: sliced per client, None: shared). All
  strategies compute the same function; they differ in the program XLA gets:

    vmap:   one batched program; a convolution with per-client kernels becomes
            a grouped convolution (fast on TPU, slow on CPU). Compiles once
            whatever the number of clients.
    hybrid: vmap, except that convolutions are written out client by client
            (plain convolutions, slicing the client axis). Elementwise ops,
            normalisation and dense layers stay batched over clients. Runs
            as 'loop' (one warning) on a JAX whose batching table moved.
    loop:   every client's whole computation written out one after another.
    auto:   `resolve_strategy` picks one for the default backend and for whether
            `fn` convolves.

  `hybrid` and `loop` grow the program (and the compile time) with the number
  of clients they see: under a device mesh that is the clients of one device.
  """
  axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
  if len(axes) != len(args) or any(ax not in (0, None) for ax in axes):
    raise ValueError(f'in_axes must be 0 or None per argument; got {in_axes!r} '
                     f'for {len(args)} arguments.')
  if strategy == 'auto':
    one = [jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), a) if ax == 0
           else a for a, ax in zip(args, axes)]
    strategy = resolve_strategy(strategy, convolutions=uses_convolutions(fn, *one))
  if strategy == 'vmap':
    return jax.vmap(fn, in_axes=in_axes)(*args)
  if strategy == 'hybrid' and hybrid_available():
    with _convolutions_per_client():
      return jax.vmap(fn, in_axes=in_axes)(*args)
  # loop: split every per-client leaf once, then rebuild each client's arguments.
  split = [None if ax is None else jax.tree.flatten(a) for a, ax in zip(args, axes)]
  split = [None if f is None else ([_unstack(x) for x in f[0]], f[1]) for f in split]
  n = next(len(leaf) for f in split if f for leaf in f[0])  # leaves: lists of client slices
  def client(i):
    return [a if f is None else jax.tree.unflatten(f[1], [parts[i] for parts in f[0]])
            for a, f in zip(args, split)]
  outs = [fn(*client(i)) for i in range(n)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)




def for_each_client(fn: Callable, strategy: str, mesh=None, in_axes=0) -> Callable:
  """`map_clients(fn, strategy, *args, in_axes=in_axes)` as a function of `args`, placed.

  With a `mesh` (a `jax.sharding.Mesh` with a 'clients' axis), every argument
  mapped over clients is sharded on that axis and each device runs `fn` on its
  own clients only (`shard_map`); shared arguments are replicated. Without a
  mesh the clients run wherever their arrays are.
  """
  mapped = lambda *args: map_clients(fn, strategy, *args, in_axes=in_axes)
  if mesh is None:
    return mapped
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  def spec(ax):
    return P('clients') if ax == 0 else P()
  def placed(*args):
    axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
    return jax.shard_map(mapped, mesh=mesh, in_specs=tuple(spec(ax) for ax in axes),
                         out_specs=P('clients'))(*args)
  return placed
