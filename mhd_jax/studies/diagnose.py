"""Where a mixed population's targets come from, checkpoint by checkpoint (issue 20).

    python -m mhd_jax.studies.diagnose WORKDIR [RULE [POWER]]

For every checkpoint of a finished run, on the public batch of that step, per
group (architecture) of clients, head 0: the mean confidence max_c p, the
mean certainty 1 - H(p) / log C, the information I = (H(mean_b p) - mean_b
H(p)) / log C (0 for a sender that says the same on every example, 1 for one
that names each example's class with certainty on a balanced batch), the
share of the group's targets that `RULE` (default: the run's own target rule)
takes from the other groups, and the group's accuracy (%) on the test classes
owned by its own clients and by the others'. Prints a Markdown table.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.algorithm import losses
from mhd_jax.outputs import explore
from mhd_jax.population import groups as groups_lib


def group_figures(probs_NxBxC, mixing_NxBxN, group_N) -> list[dict]:
  """Per group g: conf, certainty, information (means over its clients) and the share of its
  clients' mixing weight on clients of other groups, from head-0 outputs on one batch."""
  c = probs_NxBxC.shape[-1]
  entropy = lambda p: -np.sum(p * np.log(np.where(p > 0, p, 1.0)), -1)  # 0 log 0 = 0
  ent_NxB = entropy(probs_NxBxC)
  info_N = (entropy(probs_NxBxC.mean(1)) - ent_NxB.mean(1)) / np.log(c)
  out = []
  for g in np.unique(group_N):
    mine = group_N == g
    out.append({'conf': probs_NxBxC[mine].max(-1).mean(), 'certainty':
                1 - ent_NxB[mine].mean() / np.log(c), 'information': info_N[mine].mean(),
                'from_others': mixing_NxBxN[mine][..., ~mine].sum(-1).mean()})
  return out


def diagnose(workdir: str, rule: str | None = None, power: float | None = None) -> str:
  run = explore.load(workdir)
  config = run.config
  rule = rule or config.target
  power = config.get('target_power', 1.0) if power is None else power
  names = [name for name, _, _ in groups_lib.group_configs(config)]
  group_N = np.repeat(np.arange(len(names)), [n for _, n, _ in groups_lib.group_configs(config)])
  owner_C = run.primary_mask().argmax(0)  # the client owning each class (one owner each)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  weights = losses.candidate_weights(jnp.asarray(run.adjacency, jnp.float32), 1, False)
  cols = ['conf', 'certainty', 'information', 'from_others', 'acc own classes',
          'acc others\' classes']
  lines = [f'rule {rule}, power {power:g}; groups: {", ".join(names)}', '',
           '| step | ' + ' | '.join(f'{n}: {c}' for n in names for c in cols) + ' |',
           '|---' * (1 + len(names) * len(cols)) + '|']
  for step in steps:
    r = explore.load(workdir, step)
    public = next(r.data.train_batches(step))['public']['image']
    logits_NxHxBxC = np.stack([r.logits(i, public) for i in range(len(group_N))])
    probs = losses.source_probs(jnp.asarray(logits_NxHxBxC[:, :1]), config.temperature)
    m = losses.mixing_weights(probs, weights, rule, jax.random.key(step), power=power)
    figs = group_figures(np.asarray(probs[:, 0], np.float64), np.asarray(m[:, 0]), group_N)
    per_class = r.accuracies().per_class()[:, 0]  # [N, C] head 0
    cells = []
    for g, f in enumerate(figs):
      own = group_N[owner_C] == g
      acc = per_class[group_N == g]
      cells += [f'{f[k]:.2f}' for k in cols[:4]]
      cells += [f'{100 * acc[:, own].mean():.1f}', f'{100 * acc[:, ~own].mean():.1f}']
    lines.append(f'| {step} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


if __name__ == '__main__':
  args = sys.argv[1:]
  print(diagnose(args[0], args[1] if len(args) > 1 else None,
                 float(args[2]) if len(args) > 2 else None))
