"""Multi-label classification: any subset of C labels per text (pair).

Data: a registered multi-label dataset (`toxicity_prompts`) or local files,
read by `readers.read_multilabel_jsonl` (`.jsonl`: `{"text": ...,
"labels": ["a", "b"]}`, optional `text_pair`) or
`readers.read_multilabel_delimited` (`.tsv` / `.csv`: a labels column such
as `a|b`). Field names, `label_separator` and the rest go through
`config.data.reader_options` (e.g. `--config.data.reader_options.label_field=
tags`). The label set is `config.data.labels` when given, else the training
labels sorted; an eval label outside it is an error naming file, line and
field. An empty label list means "none of the labels applies" and is allowed
by default (`config.data.allow_empty_labels=True`), since most multi-label
sets have such examples (most comments in a toxicity set are clean);
set it to False to make an empty list an error.

Features: `[CLS] text [SEP] (text_pair [SEP])`, truncated longest-first to
`config.data.max_seq_length`. Head: `BertForSequenceClassification` with C
outputs, one logit per label. Labels: multi-hot float32 `[B, C]`.

Loss (`config.loss.name`), on logits `[B, C]` and multi-hot labels `[B, C]`:
`bce`, `sigmoid_focal`, `sigmoid_ghm` (stateful; its state travels through
the trainer as for every task), `dice`, `tversky` and `dsc` (their binary
form over the B x C sigmoid decisions), and `multilabel_ce` (Su 2020 /
ZLPR; per example). Count-based hyperparameters see per-label positive
counts of the training set. Softmax losses (`ce`, `focal`, ...) assume one
label per example and are refused.

Prediction: label j is predicted when `z_j > config.multilabel_threshold`
(logit space, default 0). At 0 this is `sigmoid(z) > 0.5` for the sigmoid
and dice-family losses, and exactly the decision rule of `multilabel_ce`,
whose loss is built around threshold 0 (positives above 0, negatives
below). Eval: micro / macro / per-label P/R/F1, example-based F1 (0/0 = 1),
subset accuracy and Hamming loss (`metrics.multilabel_metrics`), and the
mean per-decision BCE (`bce_loss`, a proper score comparable across
losses). `predictions.jsonl` has one row per eval example: guid, gold
`labels`, predicted `prediction` and per-label `probs` (`sigmoid(z)`).
"""

from __future__ import annotations

import copy
import math

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax.data import datasets
from bert_jax.heads import BertForSequenceClassification
from bert_jax.tasks import base
from bert_jax.tasks import classification
from bert_jax.tasks import finetune

import losses

# Losses defined on independent per-label decisions (or, multilabel_ce, on
# a label set); all others are softmax over one label and make no sense here.
MULTILABEL_LOSSES = ('bce', 'sigmoid_focal', 'sigmoid_ghm', 'multilabel_ce',
                     'dice', 'tversky', 'dsc')


def check_loss_name(name: str) -> None:
  if name not in MULTILABEL_LOSSES:
    raise ValueError(
        f'config.loss.name={name!r} does not fit multi-label classification '
        f'(it is a softmax loss over one label per example, or unknown); '
        f'valid: {", ".join(MULTILABEL_LOSSES)}')


def threshold_of(config) -> float:
  t = config.get('multilabel_threshold', 0.0)
  if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
    raise ValueError(f'config.multilabel_threshold={t!r} must be a finite '
                     'number (a logit; 0 is probability 0.5)')
  return float(t)


def multilabel_loss(spec, logits, labels, weights, state):
  """A `losses` spec on logits / multi-hot labels `[B, C]`, weights `[B]`.

  multilabel_ce is defined per example and takes the `[B]` example weights;
  the other losses see B x C sigmoid decisions, each weighted by its
  example's weight, so their mean runs over the unmasked decisions and the
  dice family's sums over the unmasked elements. Returns `(loss, state)`.
  """
  if spec.name == 'multilabel_ce':
    w = weights
  else:
    w = jnp.broadcast_to(weights[:, None], labels.shape)
  return spec(logits, labels, weights=w, state=state)


def load_split(config, which: str, labels=None) -> datasets.Dataset:
  """`finetune.load_split` with the multi-label reader for local files.

  The format is `config.data.reader_options.format` or comes from the
  extension (`datasets.multilabel_format`); for the multi-label readers
  `labels` (the label set) and `config.data.allow_empty_labels` go to the
  reader, so a bad line is reported where it is.
  """
  d = config.data
  name = d.train if which == 'train' else (d.eval or d.train)
  options = dict(d.reader_options.to_dict()) if d.get('reader_options') else {}
  fmt = options.get('format') or datasets.multilabel_format(name)
  if not str(fmt).startswith('multilabel_'):
    # A registered multi-label dataset, or data of another kind (refused by
    # the caller, which checks the dataset's task_kind).
    return finetune.load_split(config, which)
  config = copy.deepcopy(config)
  with config.unlocked():
    opts = config.data.reader_options
    opts.format = fmt
    opts.allow_empty_labels = bool(d.get('allow_empty_labels', True))
    if labels is not None:
      opts.labels = list(labels)
  return finetune.load_split(config, which)


class MultiLabelTask(finetune.FinetuneTask):
  """Multi-label sequence (pair) classification with sigmoid-type losses."""

  trim_eval_batches = True   # eval outputs are per example

  def __init__(self, config):
    super().__init__(config)
    check_loss_name(config.loss.name)
    self.threshold = threshold_of(config)
    if config.data.get('sampling_q') is not None:
      raise ValueError('config.data.sampling_q needs one class per example; '
                       'multi-label examples have a set of labels')
    if config.get('eval_logit_adjustment_tau', 0.0):
      raise ValueError('config.eval_logit_adjustment_tau is a softmax prior '
                       'correction; it does not apply to multi-label tasks')
    self.tokenizer = finetune.tokenizer_for(config)
    given = tuple(config.data.get('labels', ()) or ())
    self.train_ds = load_split(config, 'train', given or None)
    if self.train_ds.task_kind != 'multilabel':
      raise ValueError(f'config.data.train={config.data.train!r} is a '
                       f'{self.train_ds.task_kind} dataset, not multilabel')
    self.label_names = list(given or self.train_ds.label_names)
    unknown = set(self.train_ds.label_names) - set(self.label_names)
    if unknown:   # a registered dataset ignores config.data.labels
      raise ValueError(f'config.data.labels={list(given)} lacks training '
                       f'labels {sorted(unknown)}')
    self.eval_ds = load_split(config, 'eval', self.label_names)
    unknown = set(self.eval_ds.label_names) - set(self.label_names)
    if unknown:   # registered datasets fix their label set themselves
      raise ValueError(f'config.data.eval has labels absent from training: '
                       f'{sorted(unknown)}')
    self.truncated = {}
    self.train_features = self._features(self.train_ds, 'train')
    self.eval_features = self._features(self.eval_ds, 'eval')
    # Per-label positive counts: the "class counts" of count-based losses.
    self.class_counts = [int(c) for c in
                         self.train_features['labels'].sum(0)]
    self.bert_config = finetune.bert_config(config, self.tokenizer.vocab_size)
    self.model = BertForSequenceClassification(
        self.bert_config, num_labels=len(self.label_names),
        pooling=config.pooling)
    self.loss = finetune.loss_spec(config, len(self.label_names),
                                   self.class_counts)
    logging.info('multilabel: %d train / %d eval examples, %d labels %s, '
                 'positive counts %s, loss %s, threshold %g',
                 len(self.train_ds), len(self.eval_ds), len(self.label_names),
                 self.label_names, self.class_counts, self.loss,
                 self.threshold)

  def _features(self, ds, which):
    if any(e.labels is None for e in ds.examples):
      raise ValueError(f'{ds.name}/{ds.split}: unlabelled examples')
    empty = [e.guid for e in ds.examples if not e.labels]
    if empty and not self.config.data.get('allow_empty_labels', True):
      # Local files were checked line by line by the reader; this catches
      # registered datasets, whose readers take no such option.
      raise ValueError(f'{ds.name}/{ds.split}: {len(empty)} example(s) '
                       f'without labels (first: {empty[0]}) and '
                       'config.data.allow_empty_labels is False')
    features, self.truncated[which] = classification.encode_texts(
        self.tokenizer, ds, self.config.data.max_seq_length)
    features['labels'] = self.multi_hot(ds.examples)
    return features

  def multi_hot(self, examples) -> np.ndarray:
    """float32 [N, C]: 1 where the example carries the label."""
    index = {n: i for i, n in enumerate(self.label_names)}
    out = np.zeros((len(examples), len(index)), np.float32)
    for row, e in enumerate(examples):
      out[row, [index[l] for l in e.labels]] = 1.0
    return out

  def sampler_labels(self):
    raise ValueError('q-power sampling needs one class per example')

  # ---------------------------------------------------------------- model
  def _decisions(self, logits, batch):
    pred = logits > self.threshold
    gold = batch['labels'] > 0.5
    exact = jnp.all(pred == gold, axis=-1)
    return pred, exact

  def train_loss(self, params, batch, rng, loss_state):
    logits = self._logits(params, batch, deterministic=False, rng=rng)
    loss, loss_state = multilabel_loss(self.loss, logits, batch['labels'],
                                       batch['weights'], loss_state)
    _, exact = self._decisions(logits, batch)
    return loss, ({'subset_accuracy': base.mean_pair(exact, batch['weights'])},
                  loss_state)

  def eval_step(self, params, batch):
    logits = self._logits(params, batch, deterministic=True)
    w = batch['weights']
    _, exact = self._decisions(logits, batch)
    # Mean BCE per unmasked decision, as a (sum, count) pair.
    w2 = jnp.broadcast_to(w[:, None], logits.shape)
    bce = losses.get('bce')(logits, batch['labels'], weights=w2)
    count = jnp.sum(w2)
    metrics = {'subset_accuracy': base.mean_pair(exact, w),
               'bce_loss': (bce * count, count)}
    return metrics, {'logits': logits, 'labels': batch['labels'],
                     'weights': w}

  def summarize_eval(self, metrics, outputs):
    keep = outputs['weights'] > 0
    logits = np.asarray(outputs['logits'][keep], np.float64)
    gold = outputs['labels'][keep] > 0.5
    pred = logits > self.threshold
    names = self.label_names
    m = metrics_lib.multilabel_metrics(pred, gold, names)
    out = dict(bce_loss=metrics['bce_loss'])
    out.update({k: v for k, v in m.items() if k != 'per_label'})
    out['per_label'] = m['per_label']
    for name, v in m['per_label'].items():
      out[f'f1/{name}'] = v['f1']
    out['report'] = metrics_lib.format_report(m)
    out['_predictions'] = [
        dict(guid=row['guid'], labels=list(e.labels),
             prediction=row['labels'], probs=row['probs'])
        for e, row in zip(self.eval_ds.examples, self.prediction_rows(outputs))]
    return out

  def prediction_rows(self, outputs) -> list[dict]:
    """`{guid, labels, probs}` per eval example, in order: the predicted
    labels (`z > config.multilabel_threshold`) and every label's sigmoid."""
    keep = outputs['weights'] > 0
    logits = np.asarray(outputs['logits'][keep], np.float64)
    probs = 0.5 * (1.0 + np.tanh(0.5 * logits))   # sigmoid, no overflow
    names = self.label_names
    return [dict(guid=e.guid,
                 labels=[n for n, on in zip(names, row > self.threshold) if on],
                 probs={n: round(float(p), 6) for n, p in zip(names, prob)})
            for e, row, prob in zip(self.eval_ds.examples, logits, probs)]
