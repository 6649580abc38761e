"""Batches of in-memory feature arrays: order, per-host rows, length buckets.

The fine-tuning tasks hold their features as numpy arrays with a leading
example axis and iterate them with `ArrayIterator`; their eval sets go
through `eval_batches_from`. Pretraining's `PretrainingIterator` shares the
rules underneath: an epoch's order is a permutation drawn from
`(seed, epoch)` (`epoch_rng`), the position is an `EpochCursor`, each host
takes its rows of every global batch (`host_rows`), and a saved position is
checked against the setup it is restored into (`check_state`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from bert_jax.data import sampling


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
  """The generator that orders epoch `epoch` of a run seeded `seed`.

  A SeedSequence over (seed, epoch, *more) rather than seed + epoch, so that
  seed 1 epoch 0 and seed 0 epoch 1 differ; `more` separates further streams
  (e.g. one per host).
  """
  return np.random.default_rng([seed, epoch, *more])


def host_rows(rows: np.ndarray, shard_index: int, local: int) -> np.ndarray:
  """Host `shard_index`'s part of a global batch: rows `[h*local, (h+1)*local)`.

  The hosts' parts are disjoint and concatenate, in host order, to the
  single-host batch.
  """
  return rows[shard_index * local:(shard_index + 1) * local]


class EpochCursor:
  """Where an iterator is: (epoch, step), and the current epoch's order.

  Epoch e visits `order_fn(e)` (an int array of example indices, built once,
  when the epoch's first step is taken), `step_size` indices per step, for
  `steps_per_epoch` steps; then epoch e + 1 starts at step 0. Indices past
  the last whole step (a final partial batch) are not visited.
  """

  def __init__(self, order_fn: Callable[[int], np.ndarray], *,
               step_size: int, steps_per_epoch: int):
    self.order_fn = order_fn
    self.step_size = step_size
    self.steps_per_epoch = steps_per_epoch
    self.epoch, self.step = 0, 0
    self._order: Optional[np.ndarray] = None

  def next(self) -> np.ndarray:
    """The indices of the next step ([step_size] int), and advances."""
    if self._order is None:
      self._order = self.order_fn(self.epoch)
    start = self.step * self.step_size
    indices = self._order[start:start + self.step_size]
    self.step += 1
    if self.step == self.steps_per_epoch:
      self.epoch, self.step, self._order = self.epoch + 1, 0, None
    return indices

  def seek(self, epoch: int, step: int) -> None:
    """Moves to step `step` of epoch `epoch` (a saved position)."""
    if not 0 <= int(step) < self.steps_per_epoch:
      raise ValueError(f'step {step} out of range')
    self.epoch, self.step, self._order = int(epoch), int(step), None


def check_state(state: Mapping[str, Any], mine: Mapping[str, int]) -> None:
  """Raises unless the saved iterator `state` fits this setup: every key of
  `mine` (in its order) must have the same value in `state`."""
  for key, value in mine.items():
    if int(state[key]) != value:
      raise ValueError(f'data iterator state is for {key}={state[key]}, this '
                       f'run has {value}: the checkpoint belongs to another '
                       'setup')


def length_buckets(config) -> tuple[int, ...]:
  """The length buckets, checked, ending at `max_seq_length`.

  `config.data.length_buckets` when set; else the multiples of
  `ceil(max_seq_length / config.data.length_bucket_count)` (count 4 at 256:
  64, 128, 192, 256). Empty (both unset or 0): no bucketing, every batch
  has `max_seq_length` columns.
  """
  max_len = int(config.data.max_seq_length)
  buckets = tuple(config.data.get('length_buckets', ()) or ())
  if not buckets:
    count = config.data.get('length_bucket_count', 0) or 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
      raise ValueError(f'config.data.length_bucket_count={count!r} must be a '
                       'whole number >= 0 (0: no bucketing)')
    if not count:
      return ()
    step = -(-max_len // count)
    return tuple(range(step, max_len, step)) + (max_len,)
  if (any(not isinstance(b, int) or isinstance(b, bool) for b in buckets)
      or list(buckets) != sorted(set(buckets)) or buckets[0] < 1
      or buckets[-1] > max_len):
    raise ValueError(
        f'config.data.length_buckets={buckets}: need increasing whole '
        f'numbers in [1, config.data.max_seq_length={max_len}]')
  return buckets if buckets[-1] == max_len else buckets + (max_len,)


def trim_to_bucket(batch: dict[str, np.ndarray], max_len: int, length: int
                   ) -> dict[str, np.ndarray]:
  """Cuts every `[N, max_len, ...]` feature of `batch` to `[N, length, ...]`.

  Sequence features are recognised by their second axis being `max_len`;
  the tasks pad every per-token feature to exactly that length.
  """
  if length == max_len:
    return batch
  return {k: v[:, :length] if v.ndim >= 2 and v.shape[1] == max_len else v
          for k, v in batch.items()}


def _bucket_for(lengths: np.ndarray, buckets: tuple[int, ...]) -> int:
  longest = int(lengths.max()) if len(lengths) else 1
  return next(b for b in buckets if b >= longest)


class ArrayIterator:
  """Resumable batches of rows of in-memory feature arrays.

  Order: a permutation per epoch from (seed, epoch), or, with `sampler`
  (q-power), the sampler's draws. Each host takes rows
  [h*b, (h+1)*b) of every global batch, so hosts see disjoint rows and
  together the single-host batch.

  Length bucketing (`buckets`, with per-example `lengths`): each batch's
  sequence features are cut to the smallest bucket that holds its longest
  example, chosen from the whole global batch so every host cuts alike; the
  step compiles once per bucket. Padding is masked, so this changes the
  cost, not the result. `group_by_length` also changes which examples share
  a batch: each epoch's permutation is cut into windows of 50 batches, each
  window sorted by length into batches, and the batches shuffled (HF's
  `group_by_length`; less padding, length-homogeneous batches).
  """

  GROUP_WINDOW = 50   # batches per sorted window when grouping by length

  def __init__(self, features: dict[str, np.ndarray], *, global_batch_size: int,
               seed: int, shard_index: int = 0, num_shards: int = 1,
               sampler: Optional[sampling.QPowerSampler] = None,
               lengths: Optional[np.ndarray] = None,
               buckets: tuple[int, ...] = (), group_by_length: bool = False):
    self.features = features
    self.n = len(next(iter(features.values())))
    if self.n < global_batch_size and sampler is None:
      raise ValueError(f'{self.n} training examples make no batch of '
                       f'{global_batch_size}')
    if (buckets or group_by_length) and lengths is None:
      raise ValueError('length bucketing needs per-example lengths')
    self.global_batch_size = global_batch_size
    self.local = global_batch_size // num_shards
    self.shard_index = shard_index
    self.seed = seed
    self.sampler = sampler
    self.lengths = None if lengths is None else np.asarray(lengths)
    self.buckets = tuple(buckets)
    self.group_by_length = group_by_length
    self.steps_per_epoch = max(1, self.n // global_batch_size)
    self._cursor = EpochCursor(self._epoch_order, step_size=global_batch_size,
                               steps_per_epoch=self.steps_per_epoch)

  def __iter__(self):
    return self

  def _epoch_order(self, epoch: int) -> np.ndarray:
    rng = epoch_rng(self.seed, epoch)
    order = rng.permutation(self.n)
    if not self.group_by_length:
      return order
    bs = self.global_batch_size
    used = order[:self.steps_per_epoch * bs]   # whole batches only
    window = self.GROUP_WINDOW * bs
    batches = []
    for start in range(0, len(used), window):
      chunk = used[start:start + window]
      # Stable sort, longest first: the order within equal lengths is the
      # permutation's, so it still depends on the seed.
      chunk = chunk[np.argsort(-self.lengths[chunk], kind='stable')]
      batches.extend(chunk[i:i + bs] for i in range(0, len(chunk), bs))
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])

  def _indices(self) -> np.ndarray:
    if self.sampler is not None:
      return self.sampler.next_global_batch(self.global_batch_size)
    return self._cursor.next()

  def __next__(self) -> dict[str, np.ndarray]:
    idx = self._indices()
    mine = host_rows(idx, self.shard_index, self.local)
    batch = {k: v[mine] for k, v in self.features.items()}
    if self.buckets:
      batch = trim_to_bucket(batch, self.buckets[-1],
                             _bucket_for(self.lengths[idx], self.buckets))
    return batch

  def get_state(self) -> dict[str, Any]:
    state = dict(epoch=self._cursor.epoch, step=self._cursor.step, n=self.n,
                 seed=self.seed, global_batch_size=self.global_batch_size)
    if self.sampler is not None:
      state['sampler'] = self.sampler.get_state()
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    check_state(state, dict(n=self.n, seed=self.seed,
                            global_batch_size=self.global_batch_size))
    self._cursor.seek(state['epoch'], state['step'])
    if self.sampler is not None:
      self.sampler.set_state(state['sampler'])


def eval_batches_from(features: dict[str, np.ndarray], local_batch_size: int,
                      shard_index: int, num_shards: int, *,
                      lengths: Optional[np.ndarray] = None,
                      buckets: tuple[int, ...] = ()):
  """Fixed-size eval batches in data order; `weights` 0 on padding rows.

  With `buckets` (and `lengths`), sequence features are cut as in
  `ArrayIterator`, by the longest example of the global batch.
  """
  n = len(next(iter(features.values())))
  global_bs = local_batch_size * num_shards
  for start in range(0, n, global_bs):
    lo = start + shard_index * local_batch_size
    rows = np.arange(lo, lo + local_batch_size)
    valid = rows < n
    rows = np.where(valid, rows, 0)
    batch = {k: v[rows] for k, v in features.items()}
    batch['weights'] = batch.get('weights', np.ones(local_batch_size, np.float32)) * valid
    if buckets:
      batch = trim_to_bucket(batch, buckets[-1], _bucket_for(
          lengths[start:start + global_bs], buckets))
    yield batch


def pad_to(ids: Sequence[int], length: int, value: int = 0) -> np.ndarray:
  """`ids` as int32 [length], filled with `value` after them."""
  out = np.full(length, value, np.int32)
  out[:len(ids)] = ids
  return out
