"""What the studies measure in a finished run: hop curves, reachability, efficiency.

Shapes: N clients, H heads, C classes, T evaluations. Distances follow the
direction knowledge flows: A[i, j] > 0 means client i learns from client j.
"""

import jax.numpy as jnp
import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from mhd_jax.algorithm import losses
from mhd_jax.outputs import report
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd


def hop_distances(adjacency_NxN) -> np.ndarray:
  """[N, N] int: D[i, j] = fewest edges on a path j -> ... -> i (min k with (A^k)[i, j] > 0).

  D[i, i] = 0; -1 where j never reaches i. Breadth-first from every client over the links
  (`scipy.sparse.csgraph`, O(N E)), so it serves a chain, a ring or any (directed) graph,
  dense or scipy.sparse.
  """
  a = sparse.csr_array(adjacency_NxN)
  a = sparse.csr_array(a > 0, dtype=np.float32)
  # Row i of A lists whom i learns from: a path i -> ... -> j along A carries j's knowledge to i.
  dist = csgraph.shortest_path(a, method='D', directed=True, unweighted=True)
  return np.where(np.isinf(dist), -1, dist).astype(np.int64)


def pair_accuracies(correct_NxHxC, count_C, primary_NxC) -> np.ndarray:
  """[H, N, N]: accuracy of client i's head k on the primary classes of client j (fraction)."""
  count_N = (primary_NxC * count_C).sum(-1)  # test examples of client j's primary classes
  hits_HxNxN = np.einsum('ikc,jc->kij', correct_NxHxC, primary_NxC.astype(correct_NxHxC.dtype))
  return hits_HxNxN / np.maximum(count_N, 1)[None, None, :]


def hop_curves(per_class: summary_lib.PerClass, adjacency_NxN) -> dict:
  """Every head's accuracy (%) against hop distance d = 1..max in the run's graph.

  acc_HxD[k, d-1] = mean over the ordered pairs (i, j) with D[i, j] = d of the
  accuracy of client i's head k on client j's primary classes; pairs_D[d-1]
  counts those pairs.
  """
  pair_HxNxN = pair_accuracies(per_class.correct_NxHxC, per_class.count_C,
                               per_class.primary_NxC)
  dist = hop_distances(adjacency_NxN)
  ds = list(range(1, int(dist.max()) + 1))
  acc = np.array([[100 * pair_HxNxN[k][dist == d].mean() for d in ds]
                  for k in range(pair_HxNxN.shape[0])])
  return {'d': ds, 'acc_HxD': acc, 'pairs_D': [int((dist == d).sum()) for d in ds]}


def load_hop_curves(run_dir: str, adjacency_NxN) -> dict:
  return hop_curves(summary_lib.read_per_class(run_dir), adjacency_NxN)


def reachability(adjacency_NxN, num_heads: int, nu_main: float, include_self: bool,
                 nu_aux: float = 1.0) -> np.ndarray:
  """[H, N, N] bool: R[k, i, j] = client j's head 0 (its labels) can influence client i's head k
  (a dense or scipy.sparse adjacency).

  Only the distillation targets carry knowledge here (the shared backbone,
  `aux_backbone_grad`, is left out). Head 0 of client i learns from its labels
  and, when nu_main > 0, from the head 0 of its candidates W[0] (so from the
  whole upstream of i); head k >= 1, when nu_aux > 0, from head k-1 of its
  candidates W[k] (`losses.candidate_weights`, the client itself under
  `include_self`): R[k] = (W[k] > 0) R[k-1].
  """
  a = sparse.csr_array(adjacency_NxN).toarray()  # dense: R is [H, N, N] anyway
  w = np.moveaxis(np.asarray(losses.candidate_weights(
      jnp.asarray(a, jnp.float32), num_heads, include_self)) > 0, 1, 0)
  r0 = hop_distances(w[0]) >= 0 if nu_main > 0 else np.eye(w.shape[1], dtype=bool)
  out = [r0]
  for k in range(1, num_heads):
    out.append((w[k].astype(int) @ out[-1].astype(int) > 0) & (nu_aux > 0))
  return np.stack(out)


def accuracy_curve(records: list[dict], head: int = -1):
  """(steps [T], accuracy [T] in %): mean over clients of head `head`'s shared accuracy."""
  steps, _, shared_TxNxH = report.eval_history(records)
  return steps, 100 * shared_TxNxH[:, :, head].mean(1)


def steps_to(steps_T, acc_T, level: float):
  """First evaluated step with accuracy >= level; None if never."""
  hit = np.flatnonzero(np.asarray(acc_T) >= level)
  return int(steps_T[hit[0]]) if hit.size else None


def efficiency(steps_T, acc_T, bound_final: float | None = None) -> dict:
  """Final accuracy, steps to 90% / 95% of it (and of the supervised bound's final), and AUC.

  auc = trapezoid area under accuracy-over-steps divided by the evaluated span
  (steps_T[-1] - steps_T[0]): the run's mean accuracy (%), higher = faster.
  """
  steps_T, acc_T = np.asarray(steps_T), np.asarray(acc_T, float)
  final = float(acc_T[-1])
  out = {'final': final, 'auc': float(np.trapezoid(acc_T, steps_T) / (steps_T[-1] - steps_T[0]))
         if len(steps_T) > 1 else final}
  for frac in (90, 95):
    out[f'steps_{frac}_own'] = steps_to(steps_T, acc_T, frac / 100 * final)
    if bound_final is not None:
      out[f'steps_{frac}_bound'] = steps_to(steps_T, acc_T, frac / 100 * bound_final)
  return out


def run_auc(run_dir: str) -> float:
  """A finished run's AUC (%): `efficiency` of its last head's shared accuracy over steps."""
  return efficiency(*accuracy_curve(wd.read_metrics(run_dir)))['auc']


def exceeds_noise(a, b) -> bool:
  """The noise rule used by every study: |mean a - mean b| > 2 sqrt(s_a^2/n_a + s_b^2/n_b).

  s = standard deviation over seeds (ddof=1), n = number of seeds: the
  difference is more than two standard errors (about a 95% two-sided test).
  Needs >= 2 seeds on each side.
  """
  a, b = np.asarray(a, float), np.asarray(b, float)
  if len(a) < 2 or len(b) < 2:
    return False
  se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
  return bool(abs(a.mean() - b.mean()) > 2 * se)
