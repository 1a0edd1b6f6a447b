"""What goes on the wire: a client's public-batch probabilities, encoded and decoded (issue 16).

Each client sends, per step, its tempered softmax outputs on the public batch,
one [B, C] block per *source* head h (P_h = softmax(z^h / T); receivers' head
k reads source head src(k), src(0) = 0, src(k) = k - 1). A `WireSpec` says how
a block is encoded; the four options compose:

  topk = k (0 = all C): each row sends its k largest probabilities, in
    decreasing order, with their class ids (the smallest unsigned integer
    that holds C - 1: uint8 up to C = 256, then uint16, uint32). The receiver
    gives each of the other C - k classes (1 - sum of the k values) / (C - k),
    floored at 0. k = C sends the dense row and no ids.
  bits = 32 | 8 | 4: the values as float32, or as unsigned integers
    q = round(v / s * (2^b - 1)) on a per-row scale s = the row's largest
    sent value, sent as float16 (2 bytes per row). Decoded: v' = q s / (2^b - 1).
    4-bit codes are packed two to a byte (the row padded to an even count).
    Why integers on a linear scale rather than float8/float4: the KD gradient
    with respect to the student's logits is (softmax(s / T) - t) T / B, so
    what a target error costs is its *absolute* size. A linear code bounds it
    by s / (2 (2^b - 1)) for every class (0.002 at 8 bits for s = 1), while
    float8_e4m3 rounds 0.5 to a step of 1/16 and a 4-bit float is coarser
    still; the per-row scale keeps flat rows (high T, many classes) resolved.
    A quantised row is renormalised to sum 1 after decoding (a peer knows it
    receives a distribution); at 32 bits nothing is renormalised, so full
    precision is exactly the identity.
  heads_sent = m (0 = all): only source heads 0..m-1 are sent.
  every = r: outputs are sent only on steps with step % r == 0.

Receivers get nothing for a source head that is not sent (or on a step that
sends nothing): `transmit` returns zeros there, and those zeros must not be
candidates. The step does that with `neighbour_weights`, which zeroes
W[i, k, c] (c a neighbour) for every receiver head k whose source head src(k) is not
received; a client's own head k-1 (the diagonal, `include_self`) never crosses
the wire and keeps its weight. A receiver head left without candidates gets
all-zero mixing weights, hence an all-zero target and no KD term — the rules in
`losses.mixing_weights` already handle that case. The embedding (nu_emb) is
not compressed here; it goes with head 0 and arrives on the steps head 0 does.

Bytes: `encoded_bytes(spec, B, C, H_sent)` counts the arrays `encode` makes,
`sent_fraction(spec, H)` the share of steps on which each source head is sent;
a client's expected bytes per step are communication's reads weighted by both.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BITS = (32, 8, 4)  # wire.bits: the supported value widths


@dataclasses.dataclass(frozen=True)
class WireSpec:
  """How outputs are encoded (hashable: a static argument of the jitted step)."""
  topk: int = 0        # classes sent per row; 0 = all
  bits: int = 32       # 32 (float32) | 8 | 4 (integers on a per-row float16 scale)
  heads_sent: int = 0  # source heads 0..m-1 are sent; 0 = all
  every: int = 1       # outputs go out on steps with step % every == 0

  @classmethod
  def from_config(cls, config) -> 'WireSpec':
    """The spec of `config.wire`."""
    w = config.wire
    return cls(topk=int(w.topk), bits=int(w.bits), heads_sent=int(w.heads_sent),
               every=int(w.every))


def config_spec(config) -> WireSpec | None:
  """`config.wire` as a `WireSpec`; None where the config has no `wire` (step-level test
  configs): nothing is encoded, the peers read the outputs as they are."""
  return WireSpec.from_config(config) if config.get('wire') is not None else None


class Encoded(NamedTuple):
  """The arrays a client puts on the wire for blocks [..., B, C] (None: not sent).

  values: float32 [..., B, k] at 32 bits; uint8 [..., B, k] at 8 bits;
    uint8 [..., B, ceil(k / 2)] at 4 bits (low nibble first).
  indices: [..., B, k] class ids (top-k with k < C only).
  scales: float16 [..., B] per-row scales (bits < 32 only).
  """
  values: jax.Array
  indices: jax.Array | None
  scales: jax.Array | None


def config_problems(config) -> list[str]:
  """One line per `config.wire` choice that clashes with another field (ranges and
  `wire.bits` are checked in fields.FIELDS)."""
  m = config.wire.heads_sent
  if m <= config.num_heads:
    return []
  return [f'config.wire.heads_sent={m} exceeds num_heads={config.num_heads}; use 0 (all) or '
          'at most num_heads.']


def topk_problems(config, num_classes: int) -> list[str]:
  """`config.wire.topk` against the dataset's C (known once the data is opened)."""
  k = config.wire.topk
  if 0 <= k <= num_classes:
    return []
  return [f'config.wire.topk={k} must be in [1, {num_classes}] (the number of classes), or 0 '
          'for all classes.']


def sent_classes(spec: WireSpec, num_classes: int) -> int:
  """k: the values each row sends (C when topk is 0 or C)."""
  return num_classes if spec.topk in (0, num_classes) else spec.topk


def index_dtype(num_classes: int):
  """The smallest unsigned integer dtype that holds the class ids 0..C-1."""
  for dt in (np.uint8, np.uint16, np.uint32):
    if num_classes - 1 <= np.iinfo(dt).max:
      return dt
  raise ValueError(f'{num_classes} classes do not fit a uint32 class id.')


def heads_sent_mask(spec: WireSpec, num_heads: int) -> np.ndarray:
  """[H] bool over *source* heads: which heads' outputs are ever sent."""
  m = num_heads if spec.heads_sent == 0 else min(spec.heads_sent, num_heads)
  return np.arange(num_heads) < m


def sent_fraction(spec: WireSpec, num_heads: int) -> np.ndarray:
  """[H] share of steps on which source head h is sent (scales the read probabilities)."""
  return heads_sent_mask(spec, num_heads) / spec.every


def received_heads(spec: WireSpec, num_heads: int, step) -> jax.Array:
  """[H] bool over source heads: what arrives at `step` (a traced int is fine)."""
  return jnp.asarray(heads_sent_mask(spec, num_heads)) & (step % spec.every == 0)


def wire_reads(readers_HxN, emb_readers_N, spec: WireSpec):
  """`communication.readers`' (R, Re) per step under `spec`: R[h] times the share of steps
  source head h is sent, Re (the embedding, sent with head 0) times head 0's.

  Bytes per step are then `communication.bytes_sent_per_step(R', Re',
  [encoded_bytes(spec, B_pub, C, 1)] * N, emb_bytes_N)`.
  """
  frac_H = sent_fraction(spec, np.shape(readers_HxN)[0])
  return np.asarray(readers_HxN) * frac_H[:, None], np.asarray(emb_readers_N) * frac_H[0]


def neighbour_weights(weights_SxHxK, self_SxK, spec: WireSpec, step):
  """W[i, k, c] with the neighbours (c not i itself) of receiver head k dropped where src(k)
  is not received at `step`; a client's own column (its own head k-1) is kept."""
  h = weights_SxHxK.shape[1]
  src = np.maximum(np.arange(h) - 1, 0)
  ok_H = received_heads(spec, h, step)[src]
  keep_SxHxK = ok_H[None, :, None] | self_SxK[:, None, :]
  return jnp.where(keep_SxHxK, weights_SxHxK, jnp.zeros_like(weights_SxHxK))


def encoded_bytes(spec: WireSpec, batch_size: int, num_classes: int, heads: int) -> int:
  """Bytes of one client's message of `heads` source heads on a public batch of B examples,
  on a step that sends (values, class ids and scales, as `encode` makes them)."""
  k = sent_classes(spec, num_classes)
  row = {32: 4 * k, 8: k, 4: (k + 1) // 2}[spec.bits]
  if k < num_classes:
    row += k * np.dtype(index_dtype(num_classes)).itemsize
  if spec.bits < 32:
    row += np.dtype(np.float16).itemsize
  return int(heads * batch_size * row)


def _pack4(q):
  """uint8 codes 0..15 [..., n] -> bytes [..., ceil(n / 2)], low nibble first."""
  if q.shape[-1] % 2:
    q = jnp.pad(q, [(0, 0)] * (q.ndim - 1) + [(0, 1)])
  return q[..., 0::2] | (q[..., 1::2] << 4)


def _unpack4(packed, n: int):
  """Inverse of `_pack4`: [..., ceil(n / 2)] -> codes [..., n]."""
  both = jnp.stack([packed & 0xF, packed >> 4], axis=-1)
  return both.reshape(*packed.shape[:-1], -1)[..., :n]


def encode(probs_XxBxC, spec: WireSpec) -> Encoded:
  """The arrays sent for probability rows [..., B, C] (any leading axes)."""
  c = probs_XxBxC.shape[-1]
  k = sent_classes(spec, c)
  if k < c:
    vals, idx = jax.lax.top_k(probs_XxBxC, k)
    idx = idx.astype(index_dtype(c))
  else:
    vals, idx = probs_XxBxC, None
  vals = vals.astype(jnp.float32)
  if spec.bits == 32:
    return Encoded(vals, idx, None)
  levels = 2**spec.bits - 1
  scales = vals.max(-1).astype(jnp.float16)
  s = jnp.maximum(scales.astype(jnp.float32), jnp.finfo(jnp.float32).tiny)[..., None]
  q = jnp.clip(jnp.round(vals / s * levels), 0, levels).astype(jnp.uint8)
  return Encoded(_pack4(q) if spec.bits == 4 else q, idx, scales)


def decode(enc: Encoded, spec: WireSpec, num_classes: int):
  """The rows [..., B, C] a peer reconstructs from `enc` (see the module doc)."""
  k = sent_classes(spec, num_classes)
  if spec.bits == 32:
    vals = enc.values
  else:
    q = _unpack4(enc.values, k) if spec.bits == 4 else enc.values
    vals = q.astype(jnp.float32) * (enc.scales.astype(jnp.float32) / (2**spec.bits - 1))[..., None]
  if k < num_classes:
    rest = jnp.maximum(1.0 - vals.sum(-1), 0.0) / (num_classes - k)
    hit_XxBxKxC = enc.indices[..., None].astype(jnp.int32) == jnp.arange(num_classes)
    placed = jnp.sum(jnp.where(hit_XxBxKxC, vals[..., None], 0.0), axis=-2)
    vals = jnp.where(hit_XxBxKxC.any(-2), placed, rest[..., None])
  if spec.bits < 32:
    vals = vals / jnp.maximum(vals.sum(-1, keepdims=True), jnp.finfo(jnp.float32).tiny)
  return vals


def transmit(probs_NxHxBxC, spec: WireSpec, step):
  """What receivers hold of every client's source-head outputs at `step`: the decoding of
  what was sent, zeros for heads (or steps) not sent. Jittable; `step` may be traced.

  probs_NxHxBxC[j, h] = softmax(z_j^h / T) on the public batch (source heads, not
  `losses.source_probs`' receiver order); gather [:, src] afterwards.
  """
  n, h, b, c = probs_NxHxBxC.shape
  m = int(heads_sent_mask(spec, h).sum())
  got = decode(encode(probs_NxHxBxC[:, :m], spec), spec, c)
  if m < h:
    got = jnp.concatenate([got, jnp.zeros((n, h - m, b, c), got.dtype)], axis=1)
  if spec.every == 1:
    return got
  return jnp.where(step % spec.every == 0, got, jnp.zeros_like(got))

