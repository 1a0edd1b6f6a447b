"""Start-up and end of run at thousands of clients: nothing on the host grows faster than N."""

import jax
import numpy as np

from mhd_jax.population import groups as groups_lib
from mhd_jax.population import state as state_lib
from tests.conftest import short_config


def test_client_keys_are_the_fold_ins_of_each_client_id():
  rng = jax.random.PRNGKey(3)
  want = np.stack([jax.random.fold_in(rng, 7 + i) for i in range(5)])
  np.testing.assert_array_equal(state_lib.client_keys(rng, 7, 5), want)


def test_the_initialisation_program_does_not_grow_with_the_clients():
  """One vmapped fold_in, not one per client: the lowered program is the same size for 4
  and 2,000 clients (written out, 1,000 clients took 4 minutes to compile)."""
  def size(n):
    config = short_config(num_clients=n)
    specs = groups_lib.make_specs(config, 10)
    lowered = jax.jit(lambda rng: state_lib.init_state(specs, (8, 8, 1), rng)).lower(
        jax.random.PRNGKey(0))
    return len(lowered.as_text().splitlines())
  assert size(2000) == size(4)
