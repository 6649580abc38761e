"""Task heads and the encoder+head models that tasks train.

Every model holds the encoder under the name `bert`, so parameter paths are
`bert/...` for the encoder and `<head>/...` for the head, whatever the task:
  mlm/   transform/dense, transform/LayerNorm, output_bias (decoder tied)
  nsp/   dense
  classifier/  (sequence classification; `attention_pool/` when used)
  tagger/      (token tagging)
  crf/         (token tagging with config.crf: transitions [C, C], start [C],
                end [C] of a linear-chain CRF, `bert_jax.crf.CRFParams`)
  relation/    (relation classification)
  qa/          (span QA: start/end logits)
Logits are returned in fp32: losses and softmax run in fp32.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import crf as crf_lib
from bert_jax.model import (ACTIVATIONS, BertConfig, BertModel, Dropout, dense,
                            layer_norm)

Array = jax.Array

POOLINGS = ('pooler', 'cls', 'mean', 'max', 'attention')
RELATION_METHODS = ('entity_pool', 'entity_embeddings', 'entity_markers')
# Large negative logit for positions that can never be predicted. Finite (not
# -inf) so that losses over masked rows stay NaN-free.
NEG_LOGIT = -1e9


class MLMHead(nn.Module):
  """Masked-LM head, run only at the masked positions.

  transform = LayerNorm(act(dense(h))); logits = transform @ E^T + bias, with
  E the word-embedding table (tied decoder).
  """
  config: BertConfig

  @nn.compact
  def __call__(self, masked_output: Array, embedding_table: Array) -> Array:
    """masked_output: [B, P, H], the encoder at the masked positions;
    embedding_table: [V, H] -> logits float32 [B, P, V]."""
    c = self.config
    h = dense(c, c.hidden_size, 'transform_dense')(masked_output)
    h = ACTIVATIONS[c.hidden_act](h)
    h = layer_norm(c, 'transform_LayerNorm')(h)
    table = embedding_table.astype(jnp.dtype(c.dtype))
    logits = jnp.einsum('bph,vh->bpv', h, table,
                        preferred_element_type=jnp.float32)
    bias = self.param('output_bias', nn.initializers.zeros, (c.vocab_size,),
                      jnp.dtype(c.param_dtype))
    return logits + bias.astype(jnp.float32)


class NSPHead(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, pooled_output: Array) -> Array:
    """pooled [B, H] -> logits float32 [B, 2]."""
    return dense(self.config, 2, 'dense')(pooled_output).astype(jnp.float32)


class BertForPreTraining(nn.Module):
  """BERT with MLM (at masked positions) and NSP heads."""
  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config)
    self.mlm = MLMHead(self.config)
    self.nsp = NSPHead(self.config)

  def __call__(self, input_ids, token_type_ids, attention_mask,
               masked_lm_positions, *, deterministic: bool = True):
    """masked_lm_positions int [B, P] -> (mlm_logits [B,P,V], nsp_logits [B,2]).

    The encoder's output is needed at the P masked positions and [CLS] only
    (`output_positions`: the last layer runs its queries there alone)."""
    masked, pooled = self.bert(input_ids, token_type_ids, attention_mask,
                               output_positions=masked_lm_positions,
                               deterministic=deterministic)
    mlm_logits = self.mlm(masked, self.bert.word_embedding_table())
    return mlm_logits, self.nsp(pooled)


def masked_mean(sequence: Array, mask: Array) -> Array:
  """sequence [B, T, H], mask [B, T] (1 = keep) -> [B, H] (0 for empty rows)."""
  m = mask.astype(sequence.dtype)[..., None]
  total = jnp.sum(sequence * m, axis=1)
  count = jnp.maximum(jnp.sum(m, axis=1), 1)
  return total / count


def masked_max(sequence: Array, mask: Array) -> Array:
  """sequence [B, T, H], mask [B, T] -> [B, H] (0 for empty rows)."""
  m = mask.astype(bool)[..., None]
  lowest = jnp.finfo(sequence.dtype).min
  out = jnp.max(jnp.where(m, sequence, lowest), axis=1)
  return jnp.where(jnp.any(m, axis=1), out, 0)


class AttentionPool(nn.Module):
  """Learned attention pooling: softmax_t(v . tanh(W h_t)) weighted sum."""
  config: BertConfig

  @nn.compact
  def __call__(self, sequence: Array, mask: Array) -> Array:
    c = self.config
    scores = dense(c, 1, 'score')(jnp.tanh(dense(c, c.hidden_size,
                                                 'proj')(sequence)))
    scores = jnp.where(mask.astype(bool), scores[..., 0].astype(jnp.float32),
                       NEG_LOGIT)
    probs = jax.nn.softmax(scores, axis=-1).astype(sequence.dtype)
    return jnp.einsum('bt,bth->bh', probs, sequence)


def pool(config: BertConfig, pooling: str, sequence: Array, pooled: Array,
         mask: Array, module_name: str = 'attention_pool') -> Array:
  """Sentence representation [B, H] by `pooling` (see POOLINGS)."""
  if pooling == 'pooler':
    return pooled
  if pooling == 'cls':
    return sequence[:, 0]
  if pooling == 'mean':
    return masked_mean(sequence, mask)
  if pooling == 'max':
    return masked_max(sequence, mask)
  if pooling == 'attention':
    return AttentionPool(config, name=module_name)(sequence, mask)
  raise ValueError(f'unknown pooling {pooling!r}; known: {POOLINGS}')


class BertForSequenceClassification(nn.Module):
  """Single sentence or sentence pair -> logits float32 [B, num_labels]."""
  config: BertConfig
  num_labels: int
  pooling: str = 'pooler'
  dropout: Optional[float] = None   # None: config.hidden_dropout_prob

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *,
               deterministic: bool = True):
    # 'pooler' and 'cls' read the last layer at [CLS] only.
    b = input_ids.shape[0]
    outputs = {'pooler': jnp.zeros((b, 0), jnp.int32),
               'cls': jnp.zeros((b, 1), jnp.int32)}.get(self.pooling)
    seq, pooled = BertModel(self.config, name='bert')(
        input_ids, token_type_ids, attention_mask, output_positions=outputs,
        deterministic=deterministic)
    x = pool(self.config, self.pooling, seq, pooled, attention_mask)
    rate = self.config.hidden_dropout_prob if self.dropout is None else self.dropout
    x = Dropout(rate)(x, deterministic=deterministic)
    return dense(self.config, self.num_labels, 'classifier')(x).astype(jnp.float32)


class BertForTokenClassification(nn.Module):
  """Token tagging -> logits float32 [B, T, num_labels].

  With `crf=True` the head also owns a linear-chain CRF's transitions
  [C, C] and start / end scores [C] (params `crf/transitions`, `crf/start`,
  `crf/end`, zeros at init). The module still returns the per-token logits
  (the CRF's emissions); the task reads the CRF scores from the params and
  runs `bert_jax.crf` over the word-level emissions, which only it can
  gather (it knows where each word starts).
  """
  config: BertConfig
  num_labels: int
  dropout: Optional[float] = None
  crf: bool = False

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *,
               deterministic: bool = True):
    seq, _ = BertModel(self.config, name='bert')(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    rate = self.config.hidden_dropout_prob if self.dropout is None else self.dropout
    seq = Dropout(rate)(seq, deterministic=deterministic)
    if self.crf:
      crf_lib.CRFParams(self.num_labels, name='crf')()
    return dense(self.config, self.num_labels, 'tagger')(seq).astype(jnp.float32)


class BertForRelation(nn.Module):
  """Relation classification between a head and a tail entity.

  Methods (`RELATION_METHODS`):
    entity_pool:       [pooled; mean(head tokens); mean(tail tokens)] (R-BERT).
    entity_embeddings: entity-role embeddings (`entity_ids` [B,T]: 0 none,
                       1 head, 2 tail) added in the embedding layer; the
                       pooled output is classified. Needs
                       `config.num_entity_types >= 3`.
    entity_markers:    marker tokens around the entities in the input;
                       [h(head start marker); h(tail start marker)] is
                       classified (Baldini Soares et al. 2019, "entity start").
  Inputs: head_mask/tail_mask float [B,T] (entity_pool), entity_ids int [B,T]
  (entity_embeddings), head_start/tail_start int [B] (entity_markers).
  """
  config: BertConfig
  num_labels: int
  method: str = 'entity_pool'
  dropout: Optional[float] = None

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *,
               head_mask=None, tail_mask=None, entity_ids=None,
               head_start=None, tail_start=None, deterministic: bool = True):
    if self.method not in RELATION_METHODS:
      raise ValueError(f'unknown relation method {self.method!r}; '
                       f'known: {RELATION_METHODS}')
    if self.method == 'entity_embeddings' and self.config.num_entity_types < 3:
      raise ValueError('relation method entity_embeddings needs '
                       'config.num_entity_types >= 3 (none, head, tail)')
    # The last layer runs only where the method reads it (BertModel's
    # output_positions): the pooler's [CLS], and the two marker tokens.
    b = input_ids.shape[0]
    outputs = None
    if self.method == 'entity_embeddings':
      outputs = jnp.zeros((b, 0), jnp.int32)
    elif self.method == 'entity_markers':
      outputs = jnp.stack([head_start, tail_start], axis=1)
    seq, pooled = BertModel(self.config, name='bert')(
        input_ids, token_type_ids, attention_mask,
        entity_ids=entity_ids if self.method == 'entity_embeddings' else None,
        output_positions=outputs, deterministic=deterministic)
    if self.method == 'entity_pool':
      x = jnp.concatenate([pooled, masked_mean(seq, head_mask),
                           masked_mean(seq, tail_mask)], axis=-1)
    elif self.method == 'entity_embeddings':
      x = pooled
    else:
      x = seq.reshape(b, -1)   # [h(head marker); h(tail marker)]
    rate = self.config.hidden_dropout_prob if self.dropout is None else self.dropout
    x = Dropout(rate)(x, deterministic=deterministic)
    return dense(self.config, self.num_labels, 'relation')(x).astype(jnp.float32)


class BertForSpanQA(nn.Module):
  """Extractive QA: start/end logits float32 [B, T] each.

  `logit_mask` [B, T] (1 = may be predicted: passage tokens, and [CLS] for
  SQuAD v2's null answer) sets every other position to NEG_LOGIT.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *,
               logit_mask=None, deterministic: bool = True):
    seq, _ = BertModel(self.config, name='bert')(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    logits = dense(self.config, 2, 'qa')(seq).astype(jnp.float32)
    start, end = logits[..., 0], logits[..., 1]
    if logit_mask is None:
      logit_mask = attention_mask
    keep = logit_mask.astype(bool)
    return jnp.where(keep, start, NEG_LOGIT), jnp.where(keep, end, NEG_LOGIT)
