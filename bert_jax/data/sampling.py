"""Class-aware resampling for imbalanced fine-tuning: q-power sampling.

Following Mahajan et al. (2018) and Kang et al. (2020, "Decoupling
representation and classifier for long-tailed recognition"), class j is
drawn with probability

    p_j = n_j^q / sum_k n_k^q,

where n_j is the number of training examples of class j:

  * q = 1: instance-balanced (every example equally likely; the natural
    class frequencies);
  * q = 0: class-balanced (every class equally likely);
  * q = 0.5: square-root sampling, in between.

`QPowerSampler` produces epochs of example indices. An epoch has
`epoch_size` slots (default: the dataset size). Each class receives
`epoch_size * p_j` slots in expectation: the integer part always, the
fractional part by systematic sampling, so per-epoch class counts never
deviate from their expectation by one or more and the long-run frequencies
are exactly p_j. Within a class, examples are drawn uniformly with
replacement (or, with `replacement=False`, by cycling through shuffled
copies of the class, so that every example of an over-sampled class is seen
before any repeats and q=1 gives a plain shuffle of the dataset).

Determinism: the epoch `e` is a pure function of `(seed, e)`, drawn with
`numpy.random.default_rng([seed, e])`, so the position in the stream (one
integer) is the whole state; `get_state`/`set_state` save and restore it
for checkpoints. NumPy does not promise identical streams across major
versions; pin NumPy when bit-exact replays across upgrades matter.

Multi-host: every host builds the same sampler (same labels and seed) and
asks for the same global batches; `shard_index`/`num_shards` select the
host's contiguous slice of each global batch. The state is the same on
every host, so a checkpoint restores onto any number of hosts.

Token tagging: a sentence has many tags. `sentence_classes` gives each
sentence one class for sampling: its rarest entity type (rarest by the
number of sentences in the corpus containing the type; ties broken by
name), or the outside class when it has no entity. Over-sampling by the
rarest type is what raises the frequency of rare entities; sentences with
only frequent types are not boosted by the rare ones they do not contain.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Iterator, Optional, Sequence

import numpy as np

_STATE_VERSION = 1


def q_power_probs(counts: Sequence[int], q: float) -> np.ndarray:
  """p_j ∝ n_j^q over classes with n_j > 0; classes with no examples get 0."""
  counts = np.asarray(counts, dtype=np.float64)
  if counts.ndim != 1 or (counts < 0).any():
    raise ValueError(f'counts must be a 1-D array of non-negative numbers')
  if not np.isfinite(q):
    raise ValueError(f'q must be finite, got {q}')
  present = counts > 0
  if not present.any():
    raise ValueError('no class has any example')
  weights = np.zeros_like(counts)
  # Computed in log space: n^q for large n and q overflows or underflows.
  logw = q * np.log(counts[present])
  weights[present] = np.exp(logw - logw.max())
  return weights / weights.sum()


class QPowerSampler:
  """Deterministic, checkpointable, host-sharded q-power class sampler.

  Args:
    labels: one non-negative integer class id per example (for tagging, use
      `sentence_classes`).
    q: the power; 1 instance-balanced, 0 class-balanced, 0.5 square root.
    seed: the stream's seed.
    num_shards, shard_index: this host's part of each global batch.
    epoch_size: slots per epoch; default the number of examples.
    replacement: draw within a class with replacement (default) or by
      cycling through shuffled copies of the class.
    num_classes: length of `counts` and `class_probs` (default: the largest
      label + 1); pass the size of the label set so they align with it.
  """

  def __init__(self, labels: Sequence[int], q: float, seed: int = 0, *,
               num_shards: int = 1, shard_index: int = 0,
               epoch_size: Optional[int] = None, replacement: bool = True,
               num_classes: Optional[int] = None):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
      raise ValueError('labels must be a non-empty 1-D sequence')
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f'labels must be integer class ids, got {labels.dtype}')
    if (labels < 0).any():
      raise ValueError('labels must be >= 0 (drop unlabelled examples first)')
    if not 0 <= shard_index < num_shards:
      raise ValueError(f'shard_index {shard_index} not in [0, {num_shards})')
    self.labels = labels.astype(np.int64)
    self.q = float(q)
    self.seed = int(seed)
    self.num_shards = num_shards
    self.shard_index = shard_index
    self.replacement = replacement
    self.epoch_size = int(epoch_size if epoch_size is not None
                          else labels.size)
    if self.epoch_size <= 0:
      raise ValueError(f'epoch_size must be positive, got {epoch_size}')
    if num_classes is not None and num_classes <= labels.max():
      raise ValueError(f'num_classes={num_classes} but a label is '
                       f'{labels.max()}')
    self.counts = np.bincount(self.labels, minlength=num_classes or 0)
    self.class_probs = q_power_probs(self.counts, self.q)
    order = np.argsort(self.labels, kind='stable')
    bounds = np.cumsum(self.counts)[:-1]
    self._members = np.split(order, bounds)  # example indices per class
    self._fingerprint = hashlib.sha256(
        self.labels.tobytes() + str(self.q).encode()).hexdigest()[:16]
    self.position = 0  # global samples consumed, over all epochs
    self._cached: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

  @property
  def epoch(self) -> int:
    return self.position // self.epoch_size

  def class_quota(self, rng: np.random.Generator) -> np.ndarray:
    """Slots per class for one epoch: unbiased integer rounding of N p_j."""
    expected = self.epoch_size * self.class_probs
    base = np.floor(expected)
    frac = expected - base
    leftover = int(round(self.epoch_size - base.sum()))
    quota = base.astype(np.int64)
    if leftover > 0:
      # Systematic sampling: points u, u+1, ... over the cumulative
      # fractions select each class with probability exactly frac_j (each
      # frac_j < 1, so no class gets two), and exactly `leftover` classes.
      cum = np.cumsum(frac)
      cum *= leftover / cum[-1]
      u = rng.random()
      hits = np.floor(cum - u) - np.floor(np.concatenate([[0.0], cum[:-1]]) - u)
      quota += hits.astype(np.int64)
    return quota

  def epoch_indices(self, epoch: int) -> np.ndarray:
    """The global example indices of `epoch` (length `epoch_size`)."""
    if epoch == self._cached[0]:
      return self._cached[1]
    rng = np.random.default_rng([self.seed, epoch])
    quota = self.class_quota(rng)
    parts = []
    for members, m in zip(self._members, quota):
      if m == 0:
        continue
      if self.replacement:
        parts.append(members[rng.integers(0, members.size, size=m)])
      else:
        copies = -(-m // members.size)
        parts.append(np.concatenate(
            [rng.permutation(members) for _ in range(copies)])[:m])
    indices = rng.permutation(np.concatenate(parts))
    self._cached = (epoch, indices)
    return indices

  def next_global_batch(self, global_batch_size: int) -> np.ndarray:
    """The next `global_batch_size` indices of the stream (all hosts)."""
    if global_batch_size <= 0:
      raise ValueError('global_batch_size must be positive')
    out = []
    need = global_batch_size
    while need:
      epoch, offset = divmod(self.position, self.epoch_size)
      take = min(need, self.epoch_size - offset)
      out.append(self.epoch_indices(epoch)[offset:offset + take])
      self.position += take
      need -= take
    return np.concatenate(out)

  def next_batch(self, global_batch_size: int) -> np.ndarray:
    """This host's slice of the next global batch.

    Batches run across epoch boundaries: the stream is the concatenation of
    epochs, so no example slot is dropped or padded.
    """
    if global_batch_size % self.num_shards:
      raise ValueError(f'global batch size {global_batch_size} is not '
                       f'divisible by num_shards={self.num_shards}')
    batch = self.next_global_batch(global_batch_size)
    per_host = global_batch_size // self.num_shards
    return batch[self.shard_index * per_host:(self.shard_index + 1) * per_host]

  def batches(self, global_batch_size: int) -> Iterator[np.ndarray]:
    """Endless iterator of this host's batches."""
    while True:
      yield self.next_batch(global_batch_size)

  def get_state(self) -> dict:
    """A small, JSON-serialisable state; the same on every host."""
    return {'version': _STATE_VERSION, 'position': int(self.position),
            'seed': self.seed, 'q': self.q, 'epoch_size': self.epoch_size,
            'replacement': self.replacement,
            'fingerprint': self._fingerprint}

  def set_state(self, state: dict) -> None:
    """Restores `get_state()` output; refuses a state of another sampler."""
    if state.get('version') != _STATE_VERSION:
      raise ValueError(f'unsupported sampler state version '
                       f'{state.get("version")!r}')
    mine = self.get_state()
    for key in ('seed', 'q', 'epoch_size', 'replacement', 'fingerprint'):
      if state.get(key) != mine[key]:
        raise ValueError(
            f'sampler state does not match this sampler: {key} is '
            f'{state.get(key)!r} in the state, {mine[key]!r} here (different '
            'labels, q, seed or epoch size)')
    position = state['position']
    if not isinstance(position, int) or position < 0:
      raise ValueError(f'bad position {position!r} in sampler state')
    self.position = position


def entity_type(tag: str, outside: str = 'O') -> Optional[str]:
  """'B-PER' -> 'PER' (IOB2, BIOES, BMES, BILOU prefixes); outside -> None."""
  if tag == outside:
    return None
  prefix, sep, rest = tag.partition('-')
  if sep and rest and len(prefix) == 1 and prefix in 'BIMESLU':
    return rest
  return tag


def sentence_classes(tag_sequences: Sequence[Sequence[str]],
                     outside: str = 'O') -> tuple[np.ndarray, list[str]]:
  """One sampling class per sentence: its rarest entity type.

  Rarity is the number of sentences in `tag_sequences` that contain the
  type. Sentences without entities get the class `outside`.

  Returns:
    `(class_ids, class_names)`, with `class_names[0] == outside` and the
    entity types after it in sorted order.
  """
  types_per_sentence = [
      {t for t in map(lambda tag: entity_type(tag, outside), tags)
       if t is not None}
      for tags in tag_sequences]
  frequency = collections.Counter(
      t for types in types_per_sentence for t in types)
  names = [outside] + sorted(frequency)
  index = {name: i for i, name in enumerate(names)}
  ids = np.zeros(len(types_per_sentence), dtype=np.int64)
  for i, types in enumerate(types_per_sentence):
    if types:
      ids[i] = index[min(types, key=lambda t: (frequency[t], t))]
  return ids, names
