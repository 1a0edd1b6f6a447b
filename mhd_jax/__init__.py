"""mhd_jax: a JAX/Flax simulator of decentralized learning with multi-headed distillation."""


def load(workdir: str, step: int | None = None):
  """The run in `workdir` at its latest checkpoint (or `step`): see `mhd_jax.outputs.explore.Run`.

  Gives the config, the population and per-client helpers (logits, predictions,
  accuracies per head) without re-stating anything about the run.
  """
  from mhd_jax.outputs import explore  # pylint: disable=g-import-not-at-top  # keeps `import mhd_jax` light
  return explore.load(workdir, step)
