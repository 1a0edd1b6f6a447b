"""Splitting a labelled training set into a public set and N private client sets.

See docs/algorithm.md ("Choices that are ours"). A `public_fraction` of the
examples is set aside first (their labels
are dropped by the input pipeline); the rest go to the clients either by class
skew (each client owns a block of primary classes) or by a Dirichlet(alpha)
label distribution. Everything is deterministic given the seed, and every
example lands in exactly one place.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Partition:
  """Where every training example went.

  Attributes:
    client_indices: per client, sorted indices into the training set.
    public_indices: sorted indices of the public (unlabelled) examples.
    primary_classes: per client, the sorted class ids it owns. Private
      accuracy (docs/algorithm.md, "Evaluation") is measured on the test examples of these classes.
    num_classes: C.
  """
  client_indices: tuple[np.ndarray, ...]
  public_indices: np.ndarray
  primary_classes: tuple[np.ndarray, ...]
  num_classes: int

  @property
  def num_clients(self) -> int:
    return len(self.client_indices)

  def primary_mask(self) -> np.ndarray:
    """[N, C] bool: client i owns class c."""
    return primary_mask(self.primary_classes, self.num_classes)

  def label_counts(self, labels: np.ndarray) -> np.ndarray:
    """[N, C] int: how many examples of class c client i holds."""
    n, c = self.num_clients, self.num_classes
    owner = np.repeat(np.arange(n), [len(idx) for idx in self.client_indices])
    held = labels[np.concatenate(self.client_indices)].astype(np.int64)
    return np.bincount(owner * c + held, minlength=n * c).reshape(n, c)


def primary_mask(primary_classes, num_classes: int) -> np.ndarray:
  """[N, C] bool from each client's primary classes: client i owns class c."""
  mask = np.zeros((len(primary_classes), num_classes), bool)
  for i, classes in enumerate(primary_classes):
    mask[i, classes] = True
  return mask


def class_blocks(num_clients: int, num_classes: int) -> tuple[np.ndarray, ...]:
  """Primary classes of each client: N contiguous blocks of the C classes.

  With more clients than classes, client i owns class i mod C (several clients
  then share a class).
  """
  if num_clients <= num_classes:
    return tuple(np.array_split(np.arange(num_classes), num_clients))
  return tuple(np.array([i % num_classes]) for i in range(num_clients))


def _split_public(num_examples, public_fraction, rng):
  if not 0.0 <= public_fraction < 1.0:
    raise ValueError(f'public_fraction must be in [0, 1), got {public_fraction}.')
  order = rng.permutation(num_examples)
  num_public = int(round(public_fraction * num_examples))
  return np.sort(order[:num_public]), order[num_public:]


def class_skew(labels: np.ndarray, num_classes: int, num_clients: int,
               skew: float, public_fraction: float, seed: int) -> Partition:
  """Class-skew partition: with probability `skew` an example goes to an owner of its class.

  Otherwise (probability 1 - skew) it goes to a uniformly random client.
  skew = 0 is iid; skew = 1 gives each client only its primary classes.
  """
  if not 0.0 <= skew <= 1.0:
    raise ValueError(f'skew must be in [0, 1], got {skew}.')
  _check_labels(labels, num_classes, num_clients)
  rng = np.random.default_rng(seed)
  public, private = _split_public(len(labels), public_fraction, rng)
  blocks = class_blocks(num_clients, num_classes)
  owns_NxC = primary_mask(blocks, num_classes)
  owners = [np.flatnonzero(owns_NxC[:, c]) for c in range(num_classes)]
  table = np.zeros((num_classes, max(map(len, owners))), np.int64)  # [C, max owners]
  for c, own in enumerate(owners):
    table[c, :len(own)] = own
  num_owners = np.array([len(o) for o in owners])
  private_labels = labels[private]
  # A uniformly drawn owner of each example's class.
  k = (rng.random(len(private)) * num_owners[private_labels]).astype(np.int64)
  owner = table[private_labels, k]
  to_owner = rng.random(len(private)) < skew
  dest = np.where(to_owner, owner, rng.integers(num_clients, size=len(private)))
  return Partition(by_client(private, dest, num_clients), public, blocks, num_classes)


def dirichlet(labels: np.ndarray, num_classes: int, num_clients: int,
              alpha: float, public_fraction: float, seed: int) -> Partition:
  """Dirichlet label partition: class c is spread over clients by q_c ~ Dir(alpha).

  Small alpha gives very skewed clients, large alpha nearly iid ones. A class's
  primary client is the one that received most of its examples (ties: lowest
  id), so primary classes are disjoint as in the class-skew partition.
  """
  if alpha <= 0:
    raise ValueError(f'dirichlet alpha must be > 0, got {alpha}.')
  _check_labels(labels, num_classes, num_clients)
  rng = np.random.default_rng(seed)
  public, private = _split_public(len(labels), public_fraction, rng)
  dest = np.empty(len(private), np.int64)
  for c in range(num_classes):
    members = np.flatnonzero(labels[private] == c)
    q = rng.dirichlet(np.full(num_clients, alpha))
    dest[members] = rng.choice(num_clients, size=len(members), p=q)
  counts = np.bincount(dest * num_classes + labels[private],
                       minlength=num_clients * num_classes).reshape(num_clients, num_classes)
  top = counts.argmax(axis=0)
  return Partition(by_client(private, dest, num_clients), public,
                   by_client(np.arange(num_classes), top, num_clients), num_classes)


def by_client(values: np.ndarray, dest: np.ndarray, num_clients: int) -> tuple[np.ndarray, ...]:
  """Per client i, the sorted `values` whose `dest` is i (one sort, not a pass per client)."""
  order = np.lexsort((values, dest))
  return tuple(np.split(values[order], np.cumsum(np.bincount(dest, minlength=num_clients))[:-1]))


def _check_labels(labels, num_classes, num_clients):
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}.')
  if labels.ndim != 1 or len(labels) == 0:
    raise ValueError('labels must be a non-empty 1-D array.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'labels must lie in [0, {num_classes}).')


PARTITIONS = ('skew', 'dirichlet')  # config.partition: what `make` dispatches on


def make(labels: np.ndarray, num_classes: int, config) -> Partition:
  """The partition a config asks for (`config.partition`: 'skew' or 'dirichlet')."""
  if config.partition == 'skew':
    return class_skew(labels, num_classes, config.num_clients, config.skew,
                      config.public_fraction, config.seed)
  if config.partition == 'dirichlet':
    return dirichlet(labels, num_classes, config.num_clients, config.dirichlet_alpha,
                     config.public_fraction, config.seed)
  raise ValueError(f'partition must be one of {", ".join(PARTITIONS)}, got {config.partition!r}.')
