"""How many clients live on the devices at once: `population.resident` (docs/scale.md, "Cohorts").

K >= 1 keeps the population's state in host memory and streams it through the
devices K clients at a time (`placement.cohorts`, `streaming`); K >= N is the
resident step. 0, the default, is auto: every client resident when the
resident step fits the devices' memory, else cohorts of the largest K that
fits, logged. What fits comes from one cohort of one client per device
(`streamed_step.Streamed`): first an upper bound from its traced program (every
value alive at once: when N / devices of it fit, so does the resident step,
and nothing is compiled), else XLA's memory analysis of it compiled, which
tells what every client adds and what does not grow with the clients (the
public batch, every client's outputs, the network). A forced K whose cohort
does not fit is refused in one line when its programs compile, before training.
"""

import math

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.network import graph_schedule
from mhd_jax.network import participation
from mhd_jax.placement import cohorts as cohorts_lib
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import groups as groups_lib
from mhd_jax.run import streamed_step


def resident(config) -> int:
  """`config.population.resident` (0 for configs without the section)."""
  population = config.get('population')
  return int(population.resident) if population is not None else 0


def place(config, layout: layout_lib.Layout, data):
  """`layout` (every client resident), or the `cohorts_lib.Cohorts` of K clients streamed
  through its mesh: forced by `population.resident` = K, or picked to fit (0, auto)."""
  k, n = resident(config), sum(layout.sizes)
  if k >= n or (k == 0 and jax.process_count() > 1):  # streaming is one process's
    return layout
  if k:
    cohorts = cohorts_lib.Cohorts.create(layout.sizes, k, layout.mesh)
    logging.info('population.resident=%d: %d clients streamed through the devices in %d '
                 'cohorts of %d.', k, n, len(cohorts.cohorts), cohorts.width)
    return cohorts
  d = layout.mesh.devices.size
  probe = _probe(config, layout, data)
  budget = streamed_step.FRACTION * layout_lib.memory_bytes(layout.mesh) / d
  bound = math.ceil(n / d) * probe.bound_bytes()  # per device, resident: more than it needs
  if bound <= budget:
    return layout
  probe.compile()
  fixed, per_client = probe.fixed, probe.memory_bytes() - probe.fixed
  need = fixed + math.ceil(n / d) * per_client
  if need <= budget:
    logging.info('population.resident=0: every client resident (about %.2f GiB per device '
                 'by XLA\'s analysis of one cohort; %.2f GiB available).', need / 2**30,
                 budget / 2**30)
    return layout
  width = int((budget - fixed) // per_client) * d
  cohorts = cohorts_lib.Cohorts.create(layout.sizes, width, layout.mesh)
  logging.warning('population.resident=0: the %d clients would need about %.2f GiB per device '
                  'resident, %.2f GiB are available: streaming them through the devices in '
                  'cohorts of %d (about %.2f GiB per device each).', n, need / 2**30,
                  budget / 2**30, cohorts.width, (fixed + cohorts.width // d * per_client)
                  / 2**30)
  return cohorts


def _probe(config, layout, data) -> streamed_step.Streamed:
  """The streamed step of cohorts of one client per device ('vmap', the quickest to compile),
  lowered: its bound, or once compiled its memory, is what auto reads (compiling raises a
  `ConfigError` when even one client per device does not fit)."""
  specs = groups_lib.make_specs(config, data.num_classes)
  cohorts = cohorts_lib.Cohorts.create(layout.sizes, layout.mesh.devices.size, layout.mesh)
  dynamics = (graph_schedule.build(config), participation.build(config))
  shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  batch = {'private': ({'image': shape(1, config.data.batch_size, *data.image_shape)},),
           'public': {'image': shape(config.data.public_batch_size, *data.image_shape)}}
  return streamed_step.Streamed(cohorts, specs, config, 'vmap').lower(
      None, batch, jax.random.PRNGKey(0), np.zeros(sum(layout.sizes), np.int32), dynamics)
