"""Single-sentence and sentence-pair classification.

Features: `[CLS] text [SEP] (text_pair [SEP])`, truncated longest-first to
`config.data.max_seq_length` (the number truncated is logged). Head:
`BertForSequenceClassification` with `config.pooling` in pooler | cls |
mean | max | attention. Loss: any of `losses` from `config.loss`, fed the
training set's class counts. Eval: accuracy, per-class P/R/F1, macro/micro
F1, the F1 of the rarest training class (`minority_f1`), confusion matrix;
with `config.eval_logit_adjustment_tau > 0` predictions are post-hoc
logit-adjusted (Menon et al. 2021) and both raw and adjusted metrics are
reported.
"""

from __future__ import annotations

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax.data import batching
from bert_jax.data import datasets
from bert_jax.heads import BertForSequenceClassification
from bert_jax.tasks import base
from bert_jax.tasks import finetune

import losses


def probability_rows(outputs, label_names, guids) -> list[dict]:
  """`{guid, label, probs}` rows from gathered eval outputs ('logits' [M, C],
  'weights' [M]; rows of weight 0 are padding): the argmax label and the
  softmax probability of every label, by name."""
  keep = outputs['weights'] > 0
  probs = np.asarray(jax.nn.softmax(
      np.asarray(outputs['logits'][keep], np.float32), -1))
  return [dict(guid=g, label=label_names[int(np.argmax(p))],
               probs={n: float(x) for n, x in zip(label_names, p)})
          for g, p in zip(guids, probs)]


def encode_texts(tokenizer, ds, max_length: int
                 ) -> tuple[dict[str, np.ndarray], int]:
  """`[CLS] text [SEP] (text_pair [SEP])` for every example of `ds`,
  truncated longest-first to `max_length` and padded to it.

  Returns ({input_ids, token_type_ids, attention_mask: int32 [N, T],
  weights: float32 [N] ones}, number of examples truncated). Either every
  example has a text_pair or none has.
  """
  texts = [e.text for e in ds.examples]
  pairs = [e.text_pair for e in ds.examples]
  has_pairs = any(p is not None for p in pairs)
  if has_pairs and any(p is None for p in pairs):
    raise ValueError(f'{ds.name}/{ds.split}: some examples have a text_pair '
                     'and some do not')
  encs = tokenizer.encode_batch(texts, pairs if has_pairs else None,
                                max_length=max_length,
                                truncation='longest_first')
  truncated = sum(e.num_truncated > 0 for e in encs)
  if truncated:
    logging.info('%s/%s: %d of %d inputs truncated to %d tokens', ds.name,
                 ds.split, truncated, len(encs), max_length)
  pad = lambda rows: np.stack([batching.pad_to(r, max_length) for r in rows])
  return dict(input_ids=pad([e.ids for e in encs]),
              token_type_ids=pad([e.token_type_ids for e in encs]),
              attention_mask=pad([e.attention_mask for e in encs]),
              weights=np.ones(len(encs), np.float32)), truncated


class ClassificationTask(finetune.FinetuneTask):
  """Sequence (pair) classification with any loss of `losses`."""

  trim_eval_batches = True   # eval outputs are per example

  def __init__(self, config):
    super().__init__(config)
    self.tokenizer = finetune.tokenizer_for(config)
    self.train_ds = finetune.load_split(config, 'train')
    self.eval_ds = finetune.load_split(config, 'eval')
    if self.train_ds.task_kind != 'classification':
      raise ValueError(f'config.data.train={config.data.train!r} is a '
                       f'{self.train_ds.task_kind} dataset, not classification')
    self.label_names = list(self.train_ds.label_names)
    unknown = set(self.eval_ds.label_names) - set(self.label_names)
    if unknown:
      raise ValueError(f'config.data.eval has labels absent from training: '
                       f'{sorted(unknown)}')
    self.class_counts = datasets.class_counts(self.train_ds)
    self.bert_config = finetune.bert_config(config, self.tokenizer.vocab_size)
    self.model = BertForSequenceClassification(
        self.bert_config, num_labels=len(self.label_names),
        pooling=config.pooling)
    self.loss = finetune.loss_spec(config, len(self.label_names),
                                   self.class_counts)
    self.tau = finetune.posthoc_tau(config, self.class_counts,
                                    self.label_names)
    logging.info('classification: %d train / %d eval examples, labels %s, '
                 'train counts %s, loss %s', len(self.train_ds),
                 len(self.eval_ds), self.label_names, self.class_counts,
                 self.loss.name)
    self.truncated = {}
    self.train_features = self._features(self.train_ds, 'train')
    self.eval_features = self._features(self.eval_ds, 'eval')

  def _features(self, ds, which):
    features, self.truncated[which] = encode_texts(
        self.tokenizer, ds, self.config.data.max_seq_length)
    index = {n: i for i, n in enumerate(self.label_names)}
    # Unlabelled eval examples (prediction) get class 0; their metrics are
    # not shown (finetune.load_maybe_unlabelled). Training needs labels.
    features['labels'] = np.asarray(
        [index[e.label] if e.label is not None or which == 'train' else 0
         for e in ds.examples], np.int32)
    return features

  # ---------------------------------------------------------------- model
  def train_loss(self, params, batch, rng, loss_state):
    logits = self._logits(params, batch, deterministic=False, rng=rng)
    loss, loss_state = self.loss(logits, batch['labels'],
                                 weights=batch['weights'], state=loss_state)
    hit = jnp.argmax(logits, -1) == batch['labels']
    return loss, ({'accuracy': base.mean_pair(hit, batch['weights'])}, loss_state)

  def eval_step(self, params, batch):
    logits = self._logits(params, batch, deterministic=True)
    hit = jnp.argmax(logits, -1) == batch['labels']
    metrics = {'accuracy': base.mean_pair(hit, batch['weights']),
               'ce_loss': base.nll_pair(logits, batch['labels'],
                                        batch['weights'])}
    return metrics, {'logits': logits, 'labels': batch['labels'],
                     'weights': batch['weights']}

  def summarize_eval(self, metrics, outputs):
    keep = outputs['weights'] > 0
    logits, labels = outputs['logits'][keep], outputs['labels'][keep]
    out = dict(ce_loss=metrics['ce_loss'])
    out.update(self._report(np.argmax(logits, -1), labels))
    # probs: softmax in label_names order (the tune report's histogram of
    # the gold class's probability reads them).
    probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float32), -1))
    rows = [dict(guid=e.guid, label=e.label, prediction=self.label_names[int(p)],
                 probs=[round(float(x), 6) for x in q])
            for e, p, q in zip(self.eval_ds.examples, np.argmax(logits, -1),
                               probs)]
    if self.tau:
      adjusted = np.argmax(np.asarray(losses.logit_adjustment.adjust_logits(
          logits, self.class_counts, self.tau)), -1)
      out.update({f'adjusted_{k}': v for k, v in
                  self._report(adjusted, labels).items() if k != 'report'})
      for row, p in zip(rows, adjusted):   # the sweep report bootstraps these
        row['adjusted_prediction'] = self.label_names[int(p)]
    out['_predictions'] = rows
    return out

  def prediction_rows(self, outputs) -> list[dict]:
    """`{guid, label, probs}` per eval example, in order: the predicted label
    (argmax of the raw logits, as predictions.jsonl's `prediction`) and the
    softmax probability of every label."""
    return probability_rows(outputs, self.label_names,
                            [e.guid for e in self.eval_ds.examples])

  def _report(self, preds, labels):
    names = self.label_names
    m = metrics_lib.classification_metrics(preds, labels, len(names),
                                           class_names=names)
    per_class = m['per_class']
    rarest = names[int(np.argmin(self.class_counts))]
    out = dict(accuracy=m['accuracy'], macro_f1=m['macro_f1'],
               micro_f1=m['micro_f1'], weighted_f1=m['weighted_f1'],
               minority_f1=per_class[rarest]['f1'], minority_class=rarest,
               per_class=per_class, confusion_matrix=m['confusion_matrix'])
    for name, v in per_class.items():
      out[f'f1/{name}'] = v['f1']
    out['report'] = metrics_lib.format_report(m)
    return out
