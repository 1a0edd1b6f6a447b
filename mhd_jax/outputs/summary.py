"""The run's final results in its workdir: summary.json (`Summary`) and per_class.npz (`PerClass`).

Written once, at the end of a run (`train`); read by the report, the notebooks
(`explore`) and the studies. Where they live is `workdir`'s to say.
"""

import dataclasses
import json

import numpy as np

from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import workdir as wd

# ------------------------------------------------------------------ summary.json


@dataclasses.dataclass(frozen=True)
class ClientSummary:
  """One client's final accuracies (fractions, one per head), bytes it sends per step, and
  under DP its ε at the run's δ (None, and absent from the JSON, without DP)."""
  id: int
  private_acc: list[float]
  shared_acc: list[float]
  bytes_sent_per_step: int
  steps_taken: int | None = None  # steps it took part in (None in summaries from before)
  epsilon: float | None = None  # under DP: its ε at the run's δ


@dataclasses.dataclass(frozen=True)
class Summary:
  """summary.json: the run's final accuracies (fractions, one per head) and communication.

  `mean_*_acc` average over clients; `bytes_sent_per_step` counts all clients
  (the encoded bytes under `config.wire`); `fedavg_bytes_per_round` is what
  FedAvg would send for the same models (0 in summaries written before it was
  recorded). `dp` (DP runs only, else None and absent from the JSON):
  {'delta', 'noise_multiplier', 'clip_norm', 'accountant'}, each client's ε in
  `clients[i].epsilon`.
  """
  num_clients: int
  num_heads: int
  steps: int
  wall_seconds: float
  mean_private_acc: list[float]
  mean_shared_acc: list[float]
  clients: list[ClientSummary]
  bytes_sent_per_step: int
  fedavg_bytes_per_round: int = 0
  dp: dict | None = None

  @classmethod
  def create(cls, config, acc, sent_N, fedavg_N, wall_seconds: float, steps_N=None,
             epsilons_N=None, dp: dict | None = None) -> 'Summary':
    """From the final `evaluate.Accuracies`, the bytes each client sends (step, round), the
    steps each took part in, and under DP each client's ε and the `dp` block."""
    steps = [None] * config.num_clients if steps_N is None else [int(t) for t in steps_N]
    eps = [None] * config.num_clients if epsilons_N is None else [float(e) for e in epsilons_N]
    return cls(
        num_clients=config.num_clients, num_heads=config.num_heads, steps=config.num_steps,
        wall_seconds=wall_seconds,
        mean_private_acc=acc.private_NxH.mean(0).tolist(),
        mean_shared_acc=acc.shared_NxH.mean(0).tolist(),
        clients=[ClientSummary(i, acc.private_NxH[i].tolist(), acc.shared_NxH[i].tolist(),
                               int(round(sent_N[i])), steps[i], eps[i])
                 for i in range(config.num_clients)],
        bytes_sent_per_step=int(round(sent_N.sum())),
        fedavg_bytes_per_round=int(fedavg_N.sum()), dp=dp)

  def to_json(self) -> dict:
    """The JSON object of summary.json (its keys in this order; optional fields that are None,
    as in summaries written before they existed or without DP, are left out)."""
    out = dataclasses.asdict(self)
    if self.dp is None:
      del out['dp']
    for c in out['clients']:
      for key in ('steps_taken', 'epsilon'):
        if c[key] is None:
          del c[key]
    return out

  @classmethod
  def from_json(cls, obj: dict) -> 'Summary':
    return cls(**{**obj, 'clients': [ClientSummary(**c) for c in obj['clients']]})


def write_summary(workdir: str, summary: Summary) -> None:
  checkpoint.write_atomic(wd.path(workdir, wd.SUMMARY),
                lambda f: f.write(json.dumps(summary.to_json(), indent=1).encode()))


def read_summary(workdir: str) -> Summary:
  """summary.json of a finished run (FileNotFoundError before the run ends)."""
  with open(wd.path(workdir, wd.SUMMARY)) as f:
    return Summary.from_json(json.load(f))


# ------------------------------------------------------------------ per_class.npz


@dataclasses.dataclass(frozen=True)
class PerClass:
  """per_class.npz: the final evaluation per class, for studies finer than summary.json."""
  correct_NxHxC: np.ndarray  # correct predictions of client i's head k on test class c
  count_C: np.ndarray        # test examples per class
  primary_NxC: np.ndarray    # bool: client i owns class c


def write_per_class(workdir: str, per_class: PerClass) -> None:
  checkpoint.write_atomic(wd.path(workdir, wd.PER_CLASS),
                lambda f: np.savez(f, **dataclasses.asdict(per_class)))


def read_per_class(workdir: str) -> PerClass:
  with np.load(wd.path(workdir, wd.PER_CLASS)) as z:
    return PerClass(**{f.name: z[f.name] for f in dataclasses.fields(PerClass)})
