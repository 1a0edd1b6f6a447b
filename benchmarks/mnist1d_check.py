"""An external check of the training code: the published MNIST-1D models, trained as published.

    python benchmarks/mnist1d_check.py --workdir=/tmp/mnist1d_check [--models=...] [--seeds=0,1,2]

Each (model, seed) is one `train_and_evaluate` run of configs/default.py with `RECIPE`:
the setting of the MNIST-1D notebook mnist1d-classification.ipynb (Adam, learning rate
1e-2, no weight decay, batch 100, 6,000 steps) on the published dataset and split, by
one client that holds the whole training set (4,000 examples; no public set, no
distillation), evaluated on the 1,000 test examples every 250 steps. The same run from
the command line, for model M and seed S:

    python launch.py --config=configs/default.py --workdir=DIR/M/seedS --config.seed=S \
        --config.model.name=M --config.data.name=mnist1d --config.num_clients=1 \
        --config.num_heads=1 --config.topology=none --config.public_fraction=0 \
        --config.data.batch_size=100 --config.optimizer.learning_rate=0.01 \
        --config.num_steps=6000 --config.eval_every=250 --config.log_every=250 \
        --config.checkpoint.every=0 --config.strategy=loop

Prints one JSON line per run (test accuracy at the last step and the best of the
evaluations, the paper's early stopping) and one per model with their mean and std over
the seeds. Results in docs/results.md ("MNIST-1D: an external check").
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECIPE = {'data.name': 'mnist1d', 'num_clients': 1, 'num_heads': 1, 'topology': 'none',
          'public_fraction': 0.0, 'data.batch_size': 100, 'optimizer.learning_rate': 0.01,
          'num_steps': 6000, 'eval_every': 250, 'log_every': 250, 'checkpoint.every': 0,
          'strategy': 'loop'}  # one client: 'loop' is the plain model, nothing to measure
MODELS = 'linear,mnist1d_mlp,mnist1d_cnn,mnist1d_gru'


def run(model: str, seed: int, workdir: str, overrides: dict) -> dict:
  """Final and best test accuracy (%) of one run (resumed or skipped if `workdir` holds it)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from mhd_jax.outputs import workdir as wd  # pylint: disable=g-import-not-at-top
  from mhd_jax.run import train  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update_from_flattened_dict({**RECIPE, 'model.name': model, 'seed': seed, **overrides})
  summary = train.train_and_evaluate(config, workdir)
  curve = [r['eval']['mean_shared_acc'][0] for r in wd.read_metrics(workdir) if 'eval' in r]
  return {'model': model, 'seed': seed, 'final': round(100 * summary['mean_shared_acc'][0], 1),
          'best': round(100 * max(curve), 1), 'wall_s': round(summary['wall_seconds'], 1)}


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', required=True, help='one run in WORKDIR/MODEL/seedS')
  p.add_argument('--models', default=MODELS)
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--steps', type=int, default=RECIPE['num_steps'])
  args = p.parse_args()
  for model in args.models.split(','):
    rows = [run(model, int(s), os.path.join(args.workdir, model, f'seed{s}'),
                {'num_steps': args.steps}) for s in args.seeds.split(',')]
    for row in rows:
      print(json.dumps(row), flush=True)
    stats = {k: (round(statistics.mean(r[k] for r in rows), 1),
                 round(statistics.stdev(r[k] for r in rows), 1) if len(rows) > 1 else 0.0)
             for k in ('final', 'best')}
    print(json.dumps({'model': model, 'seeds': len(rows), **stats}), flush=True)


if __name__ == '__main__':
  main()
