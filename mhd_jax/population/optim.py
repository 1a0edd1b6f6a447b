"""Each client's optimizer, from `config.optimizer`."""

import optax

OPTIMIZERS = ('adam', 'sgd')  # make_optimizer dispatches on these (and config_check reads them)
SCHEDULES = ('constant', 'cosine')


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
  """optax optimizer from `config.optimizer`, with warm-up then constant or cosine decay."""
  lr = opt_config.learning_rate
  if opt_config.schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(0.0, lr, opt_config.warmup_steps,
                                            max(num_steps, opt_config.warmup_steps + 1))
  elif opt_config.schedule == 'constant':
    if opt_config.warmup_steps:
      lr = optax.join_schedules([optax.linear_schedule(0.0, lr, opt_config.warmup_steps),
                                 optax.constant_schedule(lr)], [opt_config.warmup_steps])
  else:
    raise ValueError(f'optimizer.schedule must be one of {", ".join(SCHEDULES)}, '
                     f'got {opt_config.schedule!r}.')
  if opt_config.name == 'adam':
    tx = optax.adamw(lr, weight_decay=opt_config.weight_decay)
  elif opt_config.name == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(opt_config.weight_decay),
                     optax.sgd(lr, momentum=opt_config.momentum or None, nesterov=True))
  else:
    raise ValueError(f"optimizer.name must be 'adam' or 'sgd', got {opt_config.name!r}.")
  if opt_config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip), tx)
  return tx


