"""Every field a config may hold, with its type and range: the one table `config_check` reads.

Choices (names a field must be one of) are not here: they live next to the
code that dispatches on them, and `config_check` reads them from there. What
each field means is documented in `configs/default.py`.
"""

import numpy as np

from mhd_jax.models import resnet
from mhd_jax.wire import compression


def is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_num(x) -> bool:
  return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


_INT, _NUM, _STR, _BOOL = (is_int, 'an integer'), (is_num, 'a number'), (
    lambda x: isinstance(x, str), 'a string'), (lambda x: isinstance(x, bool), 'True or False')
_ANY_INT = lambda v: True
_NONNEG = lambda v: v >= 0
_POS = lambda v: v >= 1

# Every field a config may hold: (type, range check or None, what the range is). NaN passes
# range checks (every comparison with it is False, and ranges are written as `not (bad)`):
# it is warned about, and a run with it stops at its first step (non-finite parameters).
FIELDS = {
    'seed': (_INT, None, ''),
    'num_steps': (_INT, _POS, '>= 1'),
    'log_every': (_INT, _POS, '>= 1'),
    'eval_every': (_INT, _POS, '>= 1'),
    'strategy': (_STR, None, ''),
    'strategy_measure_steps': (_INT, _NONNEG, '>= 0 (0 = the static rule, no measuring)'),
    'profile.start_step': (_INT, _NONNEG, '>= 0'),
    'profile.num_steps': (_INT, _NONNEG, '>= 0 (0 = off)'),
    'num_devices': (_INT, _NONNEG, '>= 0 (0 = all)'),
    'population.resident': (_INT, _NONNEG,
                            '>= 0 (clients on the devices at once; 0 = auto: all when they fit)'),
    'distributed.initialize': (_BOOL, None, ''),
    'distributed.coordinator_address': (_STR, None, ''),
    'distributed.num_processes': (_INT, _NONNEG, '>= 0'),
    'distributed.process_id': (_INT, lambda v: v >= -1, '>= -1'),
    'checkpoint.every': (_INT, _NONNEG, '>= 0 (0 = only at the end)'),
    'checkpoint.keep': (_INT, _POS, '>= 1'),
    'num_clients': (_INT, _POS, '>= 1'),
    'num_heads': (_INT, _POS, '>= 1'),
    'data.name': (_STR, None, ''),
    'data.data_dir': (_STR, None, ''),
    'data.train_split': (_STR, None, ''),
    'data.eval_split': (_STR, None, ''),
    'data.image_size': (_INT, _POS, '>= 1'),
    'data.augment': (_STR, None, ''),
    'data.split_seed': (_INT, None, ''),
    'data.test_fraction': (_NUM, lambda v: not (v <= 0 or v >= 1), 'in (0, 1)'),
    'data.num_samples': (_INT, _POS, '>= 1'),
    'data.num_test': (_INT, _POS, '>= 1'),
    'data.batch_size': (_INT, _POS, '>= 1'),
    'data.public_batch_size': (_INT, _POS, '>= 1'),
    'data.eval_batch_size': (_INT, _POS, '>= 1'),
    'partition': (_STR, None, ''),
    'skew': (_NUM, lambda v: not (v < 0 or v > 1), 'in [0, 1] (0 = iid, 1 = only primary classes)'),
    'class_layout': (_STR, None, ''),
    'dirichlet_alpha': (_NUM, lambda v: not v <= 0, '> 0'),
    'public_fraction': (_NUM, lambda v: not (v < 0 or v >= 1),
                        'in [0, 1) (0: no public set, for runs that do not distil)'),
    'topology': (_STR, None, ''),
    'num_islands': (_INT, _POS, '>= 1'),
    'degree': (_INT, _NONNEG, '>= 0'),
    'adjacency': (_STR, None, ''),
    'edge_prob': (_NUM, lambda v: not (v < 0 or v > 1), 'in [0, 1]'),
    'rewire_prob': (_NUM, lambda v: not (v < 0 or v > 1), 'in [0, 1]'),
    'grid_rows': (_INT, _NONNEG, '>= 0 (0 = the squarest grid)'),
    'radius': (_NUM, lambda v: not v < 0, '>= 0'),
    'exchange': (_STR, None, ''),
    'dynamics.schedule': (_STR, None, ''),
    'dynamics.failure_p': (_NUM, lambda v: not (v < 0 or v > 1), 'in [0, 1]'),
    'dynamics.cycle_graphs': (_STR, None, ''),
    'dynamics.cycle_every': (_INT, _POS, '>= 1'),
    'dynamics.participation': (_STR, None, ''),
    'dynamics.availability': (_NUM, lambda v: not (v < 0 or v > 1), 'in [0, 1]'),
    'dynamics.trace_file': (_STR, None, ''),
    'dynamics.straggler_fraction': (_NUM, lambda v: not (v < 0 or v > 1), 'in [0, 1]'),
    'dynamics.straggler_every': (_INT, _POS, '>= 1'),
    'dynamics.staleness': (_INT, _NONNEG, '>= 0 (0 = live targets)'),
    'nu_main': (_NUM, lambda v: not v < 0, '>= 0 (a loss weight)'),
    'nu_aux': (_NUM, lambda v: not v < 0, '>= 0 (a loss weight)'),
    'nu_emb': (_NUM, lambda v: not v < 0, '>= 0 (a loss weight)'),
    'temperature': (_NUM, lambda v: not v <= 0, '> 0'),
    'target': (_STR, None, ''),
    'target_power': (_NUM, lambda v: not v <= 0, '> 0'),
    'include_self': (_BOOL, None, ''),
    'average_every': (_INT, _NONNEG, '>= 0 (0 = no weight averaging)'),
    'model.name': (_STR, None, ''),
    'model.width': (_INT, _POS, '>= 1'),
    'model.depth': (_INT, _POS, '>= 1'),
    'model.dtype': (_STR, None, ''),
    'model.aux_backbone_grad': (_BOOL, None, ''),
    'model.fused_passes': (_BOOL, None, ''),
    'model.norm': (_STR, lambda v: v in resnet.NORMS, ' or '.join(resnet.NORMS)),
    'optimizer.name': (_STR, None, ''),
    'optimizer.learning_rate': (_NUM, lambda v: not v < 0,
                                '>= 0 (a negative rate is gradient ascent)'),
    'optimizer.momentum': (_NUM, lambda v: not (v < 0 or v >= 1), 'in [0, 1)'),
    'optimizer.weight_decay': (_NUM, lambda v: not v < 0, '>= 0'),
    'optimizer.schedule': (_STR, None, ''),
    'optimizer.warmup_steps': (_INT, _NONNEG, '>= 0'),
    'optimizer.grad_clip': (_NUM, lambda v: not v < 0, '>= 0 (0 = off)'),
    'wire.topk': (_INT, _NONNEG, '>= 0 (0 = all classes)'),
    'wire.bits': (_INT, lambda v: v in compression.BITS,
                  f'one of {", ".join(map(str, compression.BITS))}'),
    'wire.heads_sent': (_INT, _NONNEG, '>= 0 (0 = all heads)'),
    'wire.every': (_INT, _POS, '>= 1'),
    'dp.enabled': (_BOOL, None, ''),
    'dp.noise_multiplier': (_NUM, lambda v: not v < 0, '>= 0'),
    'dp.clip_norm': (_NUM, lambda v: not v <= 0, '> 0'),
    'dp.delta': (_NUM, lambda v: not (v <= 0 or v >= 1), 'in (0, 1)'),
}
