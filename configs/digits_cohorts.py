"""64 ResNet-18 clients on the embedded digits, streamed through the devices 8 at a time.

    python launch.py --config=configs/digits_cohorts.py --workdir=/tmp/mhd_cohorts

The population of issue 22's check (docs/scale.md, "Cohorts"): 64 clients of
ResNet-18 with the CIFAR stem at width 16 (about 0.7 M parameters each) on the
embedded 8x8 digits. `population.resident = 8` keeps every client's state in
host memory and streams it through the devices in cohorts of 8: the step's
memory follows the cohort, not the population (within 1.5x of 8 resident
clients'). Everything else is the default recipe (3 heads, skew 0.9, 30%
public, complete graph, confidence-weighted targets).

The digits leave each of 64 clients only 4 to 23 private examples, so the
private batch is 4; the public batch is the default 64. A short run (20
steps: 9 min 54 s on 2 quiet CPU cores, peak RSS 3.5 GiB) that shows the
streaming works end to end, not one that trains to accuracy.
"""

from configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  c.num_clients = 64
  c.num_steps = 20             # a check of the streaming: 10 minutes on 2 CPU cores
  c.log_every = 10             # a progress line (and the host sync) every 10 steps
  c.eval_every = 20            # one evaluation, at the end
  c.checkpoint.every = 0       # one checkpoint, at the end
  c.strategy = 'vmap'          # one program per cohort: compiles in seconds ('loop', auto's
                               # choice for convolutions on CPU, compiles 8 ResNet-18s)
  c.population.resident = 8    # K: cohorts of 8 clients through the devices
  c.data.batch_size = 4        # the smallest client holds 4 private digits
  c.model.name = 'resnet18_cifar'  # ResNet-18 with the CIFAR stem (3x3, no max-pool)
  c.model.width = 16           # base width 16 (64 canonical)
  return c
