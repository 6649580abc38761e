"""Relation classification between two marked entities of a sentence.

Data: there is no relation corpus in the data registry. Bring your own:
SemEval-2010 Task 8 files (TRAIN_FILE.TXT, TEST_FILE_FULL.TXT; the
`semeval` preset reads them with `reader_options.format='semeval'`, since
`.TXT` would otherwise be read as CoNLL) or JSON lines with word-offset spans
(`reader_options.format='relation_jsonl'`, see `readers.read_relation_jsonl`),
given as `config.data.train` / `config.data.eval`.

Methods (`config.relation_method`, see `heads.BertForRelation`):
  entity_pool:       [pooled; mean of head sub-tokens; mean of tail
                     sub-tokens]. Inputs: head_mask/tail_mask float32 [B, T],
                     1 on exactly the sub-tokens of the entity's words.
  entity_embeddings: an entity-role embedding is added to every token
                     (`num_entity_types` is set to 3). Input: entity_ids
                     int32 [B, T], 1 on head sub-tokens, 2 on tail, else 0.
  entity_markers:    the head is wrapped in [unused0] .. [unused1] and the
                     tail in [unused2] .. [unused3] (ids inserted directly,
                     since the tokenizer would split the bracketed strings);
                     the states at the two start markers are classified.
                     Inputs: head_start/tail_start int32 [B]. The vocabulary
                     must hold these four tokens (checked).

Truncation: the sentence is cut at `config.data.max_seq_length` sub-tokens
([CLS]/[SEP] and markers included). An example whose head or tail (with its
markers) does not fit entirely is skipped and counted
(`config.data.entity_truncation='skip'`, the default; skipped eval examples
are reported as `eval_skipped` and are absent from the metrics and the
predictions file) or is an error (`'raise'`).

Loss: any loss of `losses` from `config.loss` on logits [B, num_labels];
class counts for count-based losses are over the training examples kept.
With `config.data.sampling_q`, examples are q-power sampled by label.

Eval (as classification): accuracy, per-class P/R/F1, macro/micro/weighted
F1 and the confusion matrix, plus two scores that set the "no relation"
label aside (`config.other_label`, '' = the first of 'Other', 'no_relation'
in the label set, if any):
  macro_f1_excl_other: the mean F1 of the other (directed) labels, over those
    present in gold or predictions; the no-relation label's F1 is left out
    but errors into and out of it still lower the other labels' P and R.
    Without a no-relation label it equals macro_f1 (so it can always be
    `best_metric`).
  semeval_macro_f1 (only when labels carry SemEval directions such as
    'Cause-Effect(e1,e2)'): the official task score as its scorer's header
    describes it, (9+1)-way with directionality: per undirected relation R,
    P = exact (direction-correct) hits / predictions of R in either
    direction, R = hits / gold R in either direction; the macro mean of F1
    over the relations (but the no-relation one) seen in gold or predictions.
    Not checked against the Perl scorer, which also counts examples it was
    not given as Other; here skipped examples are simply not scored.
With `config.eval_logit_adjustment_tau > 0` the same metrics of post-hoc
logit-adjusted predictions (training label prior) are added as `adjusted_*`.
`config.data.max_train_examples` / `max_eval_examples` (0 = all) keep a
seeded sample of N examples of a split (`finetune.load_split`).
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax import tokenization
from bert_jax.data import batching
from bert_jax.data import datasets
from bert_jax.heads import RELATION_METHODS, BertForRelation
from bert_jax.tasks import base
from bert_jax.tasks import classification
from bert_jax.tasks import finetune

import losses

# Head start, head end, tail start, tail end.
MARKER_TOKENS = ('[unused0]', '[unused1]', '[unused2]', '[unused3]')
OTHER_LABELS = ('Other', 'no_relation')
TRUNCATION_POLICIES = ('skip', 'raise')


def marker_ids(tokenizer: tokenization.BertTokenizer) -> tuple[int, ...]:
  """Ids of MARKER_TOKENS; ValueError naming the missing ones."""
  vocab = set(tokenizer.vocab_tokens())
  missing = [m for m in MARKER_TOKENS if m not in vocab]
  if missing:
    raise ValueError(
        f'relation_method=entity_markers needs the marker tokens '
        f'{", ".join(MARKER_TOKENS)} in the vocabulary; {tokenizer.source} '
        f'lacks {", ".join(missing)}. Use a vocabulary with [unusedN] entries '
        '(e.g. the English BERT/MiniLM ones) or another relation_method.')
  return tuple(tokenizer.token_to_id(m) for m in MARKER_TOKENS)


def encode_relations(tokenizer: tokenization.BertTokenizer, examples,
                     method: str, max_seq_length: int,
                     markers: Optional[Sequence[int]] = None,
                     where: str = '<data>'):
  """Model inputs of relation examples for `method`.

  Args:
    tokenizer: the WordPiece tokenizer.
    examples: `RelationExample`s (N of them).
    method: one of RELATION_METHODS.
    max_seq_length: T, [CLS], [SEP] and markers included.
    markers: for entity_markers, the ids of (head start, head end, tail
      start, tail end), as `marker_ids` gives.
    where: dataset name for error messages.

  Returns:
    (features, kept, skipped): features for the K examples that fit:
      input_ids, token_type_ids, attention_mask int32 [K, T], weights float32
      [K], example_index int32 [K] (into `examples`), and by method
      head_mask/tail_mask float32 [K, T] | entity_ids int32 [K, T] |
      head_start/tail_start int32 [K]; `kept` the K indices into `examples`;
      `skipped` the guids of examples whose head or tail did not fit in T.

  Raises:
    ValueError: unknown method, missing markers, or an entity whose words
      give no sub-token.
  """
  if method not in RELATION_METHODS:
    raise ValueError(f'config.relation_method={method!r}; known: '
                     f'{", ".join(RELATION_METHODS)}')
  use_markers = method == 'entity_markers'
  if use_markers and (markers is None or len(markers) != 4):
    raise ValueError('entity_markers needs the 4 marker ids')
  t = max_seq_length
  encs = tokenizer.encode_pretokenized_batch(
      [list(e.words) for e in examples], add_special_tokens=False,
      truncation=None)
  rows = collections.defaultdict(list)
  kept, skipped = [], []
  for i, (e, enc) in enumerate(zip(examples, encs)):
    pieces = [[] for _ in e.words]          # sub-token ids of each word
    for tok, w in zip(enc.ids, enc.word_ids):
      pieces[w].append(tok)
    spans = {'head': e.head, 'tail': e.tail}
    for r, (s, end) in spans.items():
      if not any(pieces[s:end]):
        raise ValueError(f'{where}: example {e.guid!r}: the {r} entity '
                         f'{" ".join(e.words[s:end])!r} gives no sub-tokens')
    ids = [tokenizer.cls_id]
    word_at = [-1]               # word of each position; -1 specials, markers
    start = {}      # role -> position of its start marker
    stop = {}       # role -> one past its last piece, or past its end marker
    for w, word_pieces in enumerate(pieces):
      # Outer spans open first and close last, so nested spans stay nested.
      if use_markers:
        for r in sorted((r for r, (s, _) in spans.items() if s == w),
                        key=lambda r: -spans[r][1]):
          start[r] = len(ids)
          ids.append(markers[0 if r == 'head' else 2])
          word_at.append(-1)
      ids.extend(word_pieces)
      word_at.extend([w] * len(word_pieces))
      for r, (s, end) in spans.items():
        if s <= w < end and word_pieces:
          stop[r] = len(ids)
      if use_markers:
        for r in sorted((r for r, (_, end) in spans.items() if end == w + 1),
                        key=lambda r: -spans[r][0]):
          ids.append(markers[1 if r == 'head' else 3])
          word_at.append(-1)
          stop[r] = len(ids)
    # Positions 1 .. t-2 hold the body; an entity must end by then, markers
    # included.
    if max(stop.values()) > t - 1:
      skipped.append(e.guid)
      continue
    ids = ids[:t - 1] + [tokenizer.sep_id]
    word_at = np.asarray(word_at[:t - 1] + [-1] * (t - len(ids) + 1), np.int64)
    kept.append(i)
    rows['input_ids'].append(batching.pad_to(ids, t))
    rows['attention_mask'].append(batching.pad_to([1] * len(ids), t))
    inside = {r: (word_at >= s) & (word_at < end)
              for r, (s, end) in spans.items()}
    if method == 'entity_pool':
      # Each mask covers its entity's own words: in a nested pair the inner
      # entity's pieces are in both masks.
      rows['head_mask'].append(inside['head'].astype(np.float32))
      rows['tail_mask'].append(inside['tail'].astype(np.float32))
    elif method == 'entity_embeddings':
      # A piece in both entities (nested or equal spans) gets the head role.
      rows['entity_ids'].append(np.where(
          inside['head'], 1, np.where(inside['tail'], 2, 0)).astype(np.int32))
    else:
      rows['head_start'].append(start['head'])
      rows['tail_start'].append(start['tail'])
  k = len(kept)
  features = dict(
      input_ids=np.asarray(rows['input_ids'], np.int32).reshape(k, t),
      token_type_ids=np.zeros((k, t), np.int32),
      attention_mask=np.asarray(rows['attention_mask'], np.int32).reshape(k, t),
      weights=np.ones(k, np.float32),
      example_index=np.asarray(kept, np.int32))
  if method == 'entity_pool':
    for r in ('head', 'tail'):
      features[f'{r}_mask'] = np.asarray(rows[f'{r}_mask'],
                                         np.float32).reshape(k, t)
  elif method == 'entity_embeddings':
    features['entity_ids'] = np.asarray(rows['entity_ids'],
                                        np.int32).reshape(k, t)
  else:
    for r in ('head_start', 'tail_start'):
      features[r] = np.asarray(rows[r], np.int32).reshape(k)
  return features, kept, skipped


def other_label(label_names: Sequence[str],
                configured: str = '') -> Optional[str]:
  """The "no relation" label: `configured` if given (must be a label), else
  the first of OTHER_LABELS present, else None."""
  if configured:
    if configured not in label_names:
      raise ValueError(f'config.other_label={configured!r} is not a label; '
                       f'labels: {list(label_names)}')
    return configured
  return next((l for l in OTHER_LABELS if l in label_names), None)


def _undirected(label: str) -> str:
  """'Cause-Effect(e2,e1)' -> 'Cause-Effect'."""
  return label.split('(', 1)[0]


def is_directed(label_names: Sequence[str]) -> bool:
  """Whether labels carry SemEval directions, e.g. 'Cause-Effect(e1,e2)'."""
  return any(l.endswith(('(e1,e2)', '(e2,e1)')) for l in label_names)


def semeval_macro_f1(gold: Sequence[str], pred: Sequence[str],
                     other: str = 'Other') -> float:
  """SemEval-2010 Task 8 official score: (9+1)-way, direction-aware macro F1.

  For each undirected relation R other than `other` seen in gold or
  predictions: hits = examples with pred == gold (direction included) whose
  relation is R; P = hits / predictions of R in either direction, R = hits
  / gold R in either direction. Returns the mean F1 (0.0 when there is no
  such relation).
  """
  kinds = sorted({_undirected(l) for l in list(gold) + list(pred)} - {other})
  f1s = []
  for kind in kinds:
    hits = sum(g == p and _undirected(g) == kind for g, p in zip(gold, pred))
    n_pred = sum(_undirected(p) == kind for p in pred)
    n_gold = sum(_undirected(g) == kind for g in gold)
    f1s.append(2 * hits / (n_pred + n_gold) if n_pred + n_gold else 0.0)
  return float(np.mean(f1s)) if f1s else 0.0


def relation_metrics(preds: np.ndarray, labels: np.ndarray,
                     label_names: Sequence[str], other: Optional[str]) -> dict:
  """Host-side eval metrics (see the module docstring).

  preds, labels: int [N] class ids into `label_names`.
  """
  names = list(label_names)
  m = metrics_lib.classification_metrics(preds, labels, len(names),
                                         class_names=names)
  per_class = m['per_class']
  out = dict(accuracy=m['accuracy'], macro_f1=m['macro_f1'],
             micro_f1=m['micro_f1'], weighted_f1=m['weighted_f1'],
             per_class=per_class, confusion_matrix=m['confusion_matrix'])
  for name, v in per_class.items():
    out[f'f1/{name}'] = v['f1']
  # Always present (equal to macro_f1 without a no-relation label), so that
  # it can be config.best_metric whatever the data.
  cm = np.asarray(m['confusion_matrix'])
  present = (cm.sum(0) > 0) | (cm.sum(1) > 0)
  rest = [i for i, n in enumerate(names) if n != other and present[i]]
  out['macro_f1_excl_other'] = (
      float(np.mean([per_class[names[i]]['f1'] for i in rest])) if rest
      else 0.0)
  if is_directed(names):
    out['semeval_macro_f1'] = semeval_macro_f1(
        [names[i] for i in labels], [names[i] for i in preds], other or '')
  out['report'] = metrics_lib.format_report(m)
  return out



class RelationTask(finetune.FinetuneTask):
  """Relation classification with any loss of `losses` and three methods."""

  trim_eval_batches = True   # eval outputs are per example

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    self.method = config.get('relation_method', 'entity_markers')
    if self.method not in RELATION_METHODS:
      raise ValueError(f'config.relation_method={self.method!r}; known: '
                       f'{", ".join(RELATION_METHODS)}')
    self.policy = d.get('entity_truncation', 'skip')
    if self.policy not in TRUNCATION_POLICIES:
      raise ValueError(f'config.data.entity_truncation={self.policy!r}; '
                       f'known: {", ".join(TRUNCATION_POLICIES)}')
    if not d.train:
      raise ValueError('config.data.train is empty: give a SemEval-2010 Task 8 '
                       'file (reader_options.format=semeval) or a relation '
                       'JSONL file (reader_options.format=relation_jsonl); '
                       'no relation data ships with bert_jax')
    self.tokenizer = finetune.tokenizer_for(config)
    self.markers = (marker_ids(self.tokenizer)
                    if self.method == 'entity_markers' else None)
    self.train_ds = finetune.load_split(config, 'train')
    self.eval_ds = finetune.load_split(config, 'eval')
    for which, ds in (('train', self.train_ds), ('eval', self.eval_ds)):
      if ds.task_kind != 'relation':
        raise ValueError(f'config.data.{which}={ds.name!r} is a '
                         f'{ds.task_kind} dataset, not relation (for a '
                         'relation file set config.data.reader_options.format'
                         " to 'semeval' or 'relation_jsonl')")
    self.label_names = list(self.train_ds.label_names)
    self.index = {n: i for i, n in enumerate(self.label_names)}
    for which, ds in (('train', self.train_ds), ('eval', self.eval_ds)):
      for e in ds.examples:
        if e.label is None or e.label not in self.index:
          raise ValueError(
              f'{ds.name}/{ds.split}: example {e.guid!r} has label '
              f'{e.label!r}, which is not in the training label set '
              f'{self.label_names}')
    self.other = other_label(self.label_names, config.get('other_label', ''))
    bert = finetune.bert_config(config, self.tokenizer.vocab_size)
    if self.method == 'entity_embeddings' and bert.num_entity_types < 3:
      bert = bert.replace(num_entity_types=3)   # none, head, tail
    self.bert_config = bert
    self.model = BertForRelation(bert, num_labels=len(self.label_names),
                                 method=self.method)
    self.skipped = {}
    self.train_features, self.train_kept = self._features(self.train_ds,
                                                          'train')
    self.eval_features, self.eval_kept = self._features(self.eval_ds, 'eval')
    kept_train = [self.train_ds.examples[i] for i in self.train_kept]
    self.class_counts = [0] * len(self.label_names)
    for e in kept_train:
      self.class_counts[self.index[e.label]] += 1
    self.loss = finetune.loss_spec(config, len(self.label_names),
                                   self.class_counts)
    self.tau = finetune.posthoc_tau(config, self.class_counts,
                                    self.label_names)
    logging.info('relation (%s): %d train / %d eval examples (%d / %d skipped '
                 'for truncated entities), labels %s, train counts %s, loss '
                 '%s', self.method, len(self.train_kept), len(self.eval_kept),
                 len(self.skipped['train']), len(self.skipped['eval']),
                 self.label_names, self.class_counts, self.loss.name)

  def _features(self, ds, which):
    where = f'{ds.name}/{ds.split}'
    features, kept, skipped = encode_relations(
        self.tokenizer, ds.examples, self.method,
        self.config.data.max_seq_length, self.markers, where=where)
    if skipped:
      message = (f'{where}: {len(skipped)} of {len(ds)} examples have an '
                 f'entity beyond max_seq_length='
                 f'{self.config.data.max_seq_length} (e.g. {skipped[:3]})')
      if self.policy == 'raise':
        raise ValueError(f'{message}; raise max_seq_length or set '
                         "config.data.entity_truncation='skip'")
      logging.warning('%s; skipped', message)
    if not kept:
      raise ValueError(f'{where}: no example fits max_seq_length='
                       f'{self.config.data.max_seq_length}')
    self.skipped[which] = skipped
    # Unlabelled eval examples (prediction) get class 0 (see classification).
    features['labels'] = np.asarray(
        [self.index[ds.examples[i].label] if ds.examples[i].label is not None
         or which == 'train' else 0 for i in kept], np.int32)
    return features, kept

  # ---------------------------------------------------------------- model
  def _inputs(self, batch):
    """The method's extra inputs, as keyword arguments of BertForRelation."""
    keys = {'entity_pool': ('head_mask', 'tail_mask'),
            'entity_embeddings': ('entity_ids',),
            'entity_markers': ('head_start', 'tail_start')}[self.method]
    return {k: batch[k] for k in keys}

  def _logits(self, params, batch, *, deterministic, rng=None):
    """-> float32 [B, num_labels]."""
    return self._apply(
        params, batch, batch['input_ids'], batch['token_type_ids'],
        batch['attention_mask'], **self._inputs(batch),
        deterministic=deterministic,
        rngs=None if deterministic else {'dropout': rng})

  def init_params(self, rng, batch):
    return self.model.init(rng, batch['input_ids'], batch['token_type_ids'],
                           batch['attention_mask'],
                           **self._inputs(batch))['params']

  def pretrained_params(self, params):
    # Pretrained encoders have no entity-role embeddings: load everything
    # else and keep the fresh table.
    bert = dict(params['bert'])
    embeddings = dict(bert['embeddings'])
    roles = embeddings.pop('entity_embeddings', None)
    bert['embeddings'] = embeddings
    loaded = finetune.pretrained_bert_params(
        self.config, dict(params, bert=bert), self.bert_config)
    if loaded is None or roles is None:
      return loaded
    loaded['bert'] = dict(loaded['bert'])
    loaded['bert']['embeddings'] = dict(loaded['bert']['embeddings'],
                                        entity_embeddings=roles)
    return loaded

  def train_loss(self, params, batch, rng, loss_state):
    logits = self._logits(params, batch, deterministic=False, rng=rng)
    loss, loss_state = self.loss(logits, batch['labels'],
                                 weights=batch['weights'], state=loss_state)
    hit = jnp.argmax(logits, -1) == batch['labels']
    metrics = {'accuracy': base.mean_pair(hit, batch['weights'])}
    return loss, (metrics, loss_state)

  def eval_step(self, params, batch):
    logits = self._logits(params, batch, deterministic=True)
    hit = jnp.argmax(logits, -1) == batch['labels']
    metrics = {'accuracy': base.mean_pair(hit, batch['weights']),
               'ce_loss': base.nll_pair(logits, batch['labels'],
                                        batch['weights'])}
    return metrics, {'logits': logits, 'labels': batch['labels'],
                     'weights': batch['weights'],
                     'example_index': batch['example_index']}

  def prediction_rows(self, outputs) -> list[dict]:
    """`{guid, label, probs}` per scored eval example (examples skipped for
    truncated entities have none), as `classification.probability_rows`."""
    keep = outputs['weights'] > 0
    guids = [self.eval_ds.examples[int(i)].guid
             for i in outputs['example_index'][keep]]
    return classification.probability_rows(outputs, self.label_names, guids)

  def summarize_eval(self, metrics, outputs):
    keep = outputs['weights'] > 0
    preds = np.argmax(outputs['logits'][keep], -1)
    labels = outputs['labels'][keep]
    out = dict(ce_loss=metrics['ce_loss'])
    out.update(relation_metrics(preds, labels, self.label_names, self.other))
    skipped = self.skipped['eval']
    out['eval_skipped'] = len(skipped)
    out['train_skipped'] = len(self.skipped['train'])
    if skipped:
      out['report'] = (f'({len(skipped)} eval examples with an entity beyond '
                       'max_seq_length were skipped and are not scored)\n'
                       + out['report'])
    for key in ('macro_f1_excl_other', 'semeval_macro_f1'):
      if key in out:
        out['report'] += f'{key}: {out[key]:.4f}\n'
    rows = [dict(guid=self.eval_ds.examples[int(i)].guid,
                 label=self.eval_ds.examples[int(i)].label,
                 prediction=self.label_names[int(p)])
            for i, p in zip(outputs['example_index'][keep], preds)]
    if self.tau:
      adjusted = np.argmax(np.asarray(losses.logit_adjustment.adjust_logits(
          outputs['logits'][keep], self.class_counts, self.tau)), -1)
      m = relation_metrics(adjusted, labels, self.label_names, self.other)
      out.update({f'adjusted_{k}': v for k, v in m.items() if k != 'report'})
      for row, p in zip(rows, adjusted):   # the sweep report bootstraps these
        row['adjusted_prediction'] = self.label_names[int(p)]
    out['_predictions'] = rows
    return out
