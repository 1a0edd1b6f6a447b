"""How many clients live on the devices at once: `population.resident` (docs/scale.md, "Cohorts").

K >= 1 keeps the population's state in host memory and streams it through the
devices K clients at a time (`placement.cohorts`, `streaming`); K >= N is the
resident step. 0, the default, is auto: every client resident when the
resident step fits the devices' memory, else cohorts of the largest K that
fits, logged. What fits comes from two cohorts, of one and of eight clients per
device (`streamed_step.Streamed`): the line through their bytes tells what every
client adds and what does not grow with the clients (the public batch, every
client's outputs and the exchange's buffers over them, the network). First from
an upper bound of their traced programs (every value alive at once: when N /
devices cohorts of one, or the line at N / devices, fit, so does the resident
step, and nothing is compiled), else from XLA's memory analysis of them
compiled. A forced K whose cohort does not fit is refused in one line when its
programs compile, before training.
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

# Clients per device of the two cohorts auto measures (at most the largest group): far apart,
# so that XLA's choices for what does not grow with the clients do not swamp what each adds.
WIDTHS = (1, 8)


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
  per_device = math.ceil(n / d)
  budget = streamed_step.FRACTION * layout_lib.memory_bytes(layout.mesh) / d
  probes = [_probe(config, layout, data, WIDTHS[0])]
  bound = probes[0].bound_bytes()  # one cohort's values, all alive: more than it needs
  if per_device * bound <= budget:  # (and N / d such cohorts more than the resident step)
    return layout
  probes.append(_probe(config, layout, data, WIDTHS[1]))
  fixed, per_client = _line(probes, [bound, probes[1].bound_bytes()])
  if fixed + per_device * per_client <= budget:
    return layout
  fixed, per_client = _line(probes, [probes[0].compile().memory_bytes(),  # refused: 1 won't fit
                                     probes[1].compile(check=False).memory_bytes()])
  need = fixed + per_device * per_client
  if need <= budget:
    logging.info('population.resident=0: every client resident (about %.2f GiB per device '
                 'by XLA\'s analysis of two cohorts; %.2f GiB available).', need / 2**30,
                 budget / 2**30)
    return layout
  width = max(1, int((budget - fixed) // per_client)) * d
  cohorts = cohorts_lib.Cohorts.create(layout.sizes, width, layout.mesh)
  logging.warning('population.resident=0: the %d clients would need about %.2f GiB per device '
                  'resident, %.2f GiB are available: streaming them through the devices in '
                  'cohorts of %d (about %.2f GiB per device each).', n, need / 2**30,
                  budget / 2**30, cohorts.width, (fixed + cohorts.width // d * per_client)
                  / 2**30)
  return cohorts


def _line(probes, bytes_per_device) -> tuple[int, int]:
  """(what does not grow with the clients, what each client per device adds: at least its
  state), per device, from the bytes of the two probes' cohorts. The exchange's buffers over
  every client's outputs are in both: one cohort's bytes times N would count them N times."""
  d = probes[0].cohorts.mesh.devices.size
  (w1, w2), (b1, b2) = (p.cohorts.width // d for p in probes), bytes_per_device
  per_client = max((b2 - b1) // (w2 - w1) if w2 > w1 else 0, probes[0].client_bytes)
  return max(b1 - w1 * per_client, 0), per_client


def _probe(config, layout, data, per_device: int) -> streamed_step.Streamed:
  """The streamed step of cohorts of `per_device` clients per device ('vmap', the quickest to
  compile), lowered: its bound, or once compiled its memory, is what auto reads (compiling
  raises a `ConfigError` when the cohort does not fit)."""
  specs = groups_lib.make_specs(config, data.num_classes)
  cohorts = cohorts_lib.Cohorts.create(layout.sizes, per_device * layout.mesh.devices.size,
                                       layout.mesh)
  dynamics = (graph_schedule.build(config), participation.build(config))
  shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  batch = {'private': ({'image': shape(1, config.data.batch_size, *data.image_shape)},),
           'public': {'image': shape(config.data.public_batch_size, *data.image_shape)}}
  return streamed_step.Streamed(cohorts, specs, config, 'vmap').lower(
      None, batch, jax.random.PRNGKey(0), np.zeros(sum(layout.sizes), np.int32), dynamics)
