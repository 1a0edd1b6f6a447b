"""A thousand clients on a sparse graph: 1,024 MNIST-1D MLP clients on a 32 x 32 torus.

    python launch.py --config=configs/population.py --workdir=workdirs/population
    python -m mhd_jax.studies population --config=configs/population.py --jobs=1

Each client owns one class (skew 1.0), the classes in bands of neighbouring clients
(`class_layout = 'bands'`: clients 0-102 own class 0, and so on, about 3 rows of the
torus each), so most classes lie many hops from most clients: up to 14 on this torus
(diameter 32), against 3 heads. MNIST-1D at MNIST's sizes: 60,000 training signals, 30%
public, so each client holds about 41 private signals of its class. The exchange runs on
the neighbour table (each client and its 4 neighbours: `exchange = 'auto'` picks it).
The population study's numbers and time: docs/results.md.
"""

from configs import mnist1d


def get_config(arg: str | None = None):
  c = mnist1d.get_config(arg)
  c.num_clients = 1024
  c.topology = 'torus'       # 32 x 32 (grid_rows = 0: the squarest grid)
  c.skew = 1.0               # one class each
  c.class_layout = 'bands'   # neighbouring clients share a class
  c.model.name = 'mnist1d_mlp'
  c.data.batch_size = 16     # the smallest client holds 22 private signals (41 on average)
  c.strategy = 'vmap'        # one program over all 1,024 clients
  c.num_steps = 400
  c.eval_every = 100
  c.log_every = 50
  c.checkpoint.every = 200
  return c
