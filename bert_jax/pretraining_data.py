"""BERT pretraining data: documents -> NSP pairs -> fixed-length MLM examples.

Pipeline (after the original BERT recipe, `create_pretraining_data.py`):

  1. Documents, each a list of sentences (`bert_jax.data.corpora`), are
     tokenised into `list[list[list[int]]]` (document -> sentence -> ids);
     see `tokenize_documents`.
  2. `create_nsp_instances` packs consecutive sentences of a document into
     `[CLS] A [SEP] B [SEP]` pairs for next-sentence prediction.
  3. `to_features` pads an instance to `max_seq_length` and, for offline
     ("static") masking, applies `mask_tokens` (numpy, optional whole-word).
     Alternatively the unmasked features go to the train step and
     `mask_tokens_jax` draws fresh masks every step (RoBERTa-style dynamic
     masking) from the step's RNG key.
  4. `write_shards`/`read_shards` store examples in ArrayRecord files;
     `PretrainingIterator` batches them (or in-memory examples) for training,
     deterministically, with a checkpointable position.

Deviations from the original script, all to make the label and masking
statistics what the paper states rather than what the script's corner cases
produce:
  * The short target length (probability `short_seq_prob`) is drawn for
    every pair, not once per document: in the script one short-target
    document turns into hundreds of one-sentence pairs, which skews the
    statistics of small corpora.
  * The script forces a random next segment whenever the accumulated chunk
    is a single sentence, so more than half of the pairs are "random next".
    Here the coin (`nsp_prob`) is tossed first; for an "actual next" pair
    with a one-sentence chunk, B is the document's next sentence (consumed)
    or, at the end of a document, A becomes the previous sentence (reused).
    Only one-sentence documents force a random next.
  * The number of masked positions is counted from the maskable tokens
    (real tokens that are not special), not from the length including
    [CLS]/[SEP], so exactly ~`masked_lm_prob` of the real tokens are masked.
  * The random replacement token (10% case) is drawn uniformly from the
    vocabulary minus `special_ids` (and [MASK]), not from the whole
    vocabulary.

Serialisation: each example is a dict of numpy arrays, stored as one
ArrayRecord record with `flax.serialization.msgpack_serialize` (dtypes and
shapes preserved; `msgpack_restore` reads it back). Files are written with
`group_size:1` so any record can be read on its own (random access for
shuffling).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob as glob_lib
import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import progress
from bert_jax.data import batching

Features = dict[str, np.ndarray]

# --------------------------------------------------------------------------
# 1. Tokenised documents.
# --------------------------------------------------------------------------


def tokenize_documents(
    documents: Iterable[Sequence[str]],
    encode_batch: Callable[[list[str]], Sequence[Sequence[int]]],
) -> list[list[list[int]]]:
  """Tokenises documents sentence by sentence, dropping empty results.

  Args:
    documents: each a sequence of sentence strings.
    encode_batch: maps a list of sentences to their token ids *without*
      special tokens, e.g. `lambda s: [e.ids for e in
      tok.encode_batch(s, add_special_tokens=False)]` for a `tokenizers`
      tokenizer.

  Returns:
    document -> sentence -> ids (python ints); sentences that tokenise to
    nothing and documents left empty are dropped.
  """
  out = []
  for document in progress.bar(documents, desc='tokenize', unit='doc',
                               total=_len_or_none(documents)):
    ids = [list(s) for s in encode_batch(list(document)) if len(s)]
    if ids:
      out.append(ids)
  return out


def _len_or_none(x):
  try:
    return len(x)
  except TypeError:
    return None


# --------------------------------------------------------------------------
# 2. Next-sentence-prediction instances.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instance:
  """One NSP pair before padding.

  Attributes:
    input_ids: [L] int32, `[CLS] A [SEP] B [SEP]`, L <= max_seq_length.
    segment_ids: [L] int32, 0 up to and including the first [SEP], then 1.
    is_random_next: True when B was drawn from another document.
    a_document: index (into the `documents` argument) of A's document.
    b_document: index of B's document (== a_document unless random next).
  """
  input_ids: np.ndarray
  segment_ids: np.ndarray
  is_random_next: bool
  a_document: int
  b_document: int


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int],
                      max_num_tokens: int,
                      rng: np.random.Generator) -> tuple[list[int], list[int]]:
  """Truncates a pair to at most `max_num_tokens` tokens in total.

  As in BERT, one token at a time is removed from the longer segment (B on
  ties), from its front or its back with equal probability -- random sides
  so the model does not learn that segments always end at sentence ends.
  Drawn here in closed form: how many tokens each segment loses is fixed by
  the lengths; how many of those come off the front is Binomial(k, 1/2).

  Returns:
    The truncated (tokens_a, tokens_b).
  """
  la, lb = len(tokens_a), len(tokens_b)
  cut_a = cut_b = 0
  while la + lb > max_num_tokens:
    if la > lb:
      la -= 1
      cut_a += 1
    else:
      lb -= 1
      cut_b += 1
  front_a = int(rng.binomial(cut_a, 0.5)) if cut_a else 0
  front_b = int(rng.binomial(cut_b, 0.5)) if cut_b else 0
  tokens_a = tokens_a[front_a:len(tokens_a) - (cut_a - front_a)]
  tokens_b = tokens_b[front_b:len(tokens_b) - (cut_b - front_b)]
  return tokens_a, tokens_b


def _flatten(segments: Sequence[Sequence[int]]) -> list[int]:
  out: list[int] = []
  for s in segments:
    out.extend(s)
  return out


def _instances_from_document(documents, doc_index, *, max_seq_length,
                             short_seq_prob, nsp_prob, rng, cls_id, sep_id,
                             out: list[Instance]) -> None:
  """Appends the NSP instances of one pass over `documents[doc_index]`."""
  document = documents[doc_index]
  max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP].

  def draw_target():
    # Mostly fill the sequence; sometimes (short_seq_prob) aim shorter so
    # the model also sees the short inputs of fine-tuning tasks.
    if rng.random() < short_seq_prob:
      return int(rng.integers(2, max_num_tokens + 1))
    return max_num_tokens

  target = draw_target()
  chunk: list[list[int]] = []
  chunk_start = 0  # Index in `document` of chunk[0].
  chunk_len = 0
  i = 0
  while i < len(document):
    if not chunk:
      chunk_start = i
    chunk.append(document[i])
    chunk_len += len(document[i])
    if i == len(document) - 1 or chunk_len >= target:
      is_random_next = rng.random() < nsp_prob
      if not is_random_next and len(chunk) == 1:
        # A true "next" pair needs two sentences: take the following one,
        # or at the end of the document re-use the preceding one as A.
        if i + 1 < len(document):
          i += 1
          chunk.append(document[i])
        elif chunk_start > 0:
          chunk.insert(0, document[chunk_start - 1])
          chunk_start -= 1
        else:
          is_random_next = True  # One-sentence document: no choice.
      a_end = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
      tokens_a = _flatten(chunk[:a_end])
      if is_random_next:
        # Another document, uniformly (documents[doc_index] excluded).
        other = int(rng.integers(0, len(documents) - 1))
        other += other >= doc_index
        random_doc = documents[other]
        target_b = target - len(tokens_a)
        tokens_b = []
        for j in range(int(rng.integers(0, len(random_doc))),
                       len(random_doc)):
          tokens_b.extend(random_doc[j])
          if len(tokens_b) >= target_b:
            break
        # The chunk's sentences after A were not used: put them back so they
        # start the next chunk instead of being wasted.
        i -= len(chunk) - a_end
        b_doc = other
      else:
        tokens_b = _flatten(chunk[a_end:])
        b_doc = doc_index
      tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b,
                                             max_num_tokens, rng)
      assert tokens_a and tokens_b, 'segments are never empty'
      ids = np.asarray([cls_id, *tokens_a, sep_id, *tokens_b, sep_id],
                       np.int32)
      seg = np.zeros(len(ids), np.int32)
      seg[len(tokens_a) + 2:] = 1
      out.append(Instance(ids, seg, bool(is_random_next), doc_index, b_doc))
      chunk = []
      chunk_len = 0
      target = draw_target()
    i += 1


def create_nsp_instances(documents: Sequence[Sequence[Sequence[int]]], *,
                         max_seq_length: int, short_seq_prob: float = 0.1,
                         nsp_prob: float = 0.5, dupe_factor: int = 1,
                         rng: np.random.Generator, cls_id: int,
                         sep_id: int) -> list[Instance]:
  """Builds shuffled `[CLS] A [SEP] B [SEP]` instances from documents.

  For each of `dupe_factor` passes over every document: sentences are
  accumulated into a chunk until it reaches the target length
  (`max_seq_length - 3`, or with probability `short_seq_prob` a uniform
  length in [2, max_seq_length - 3]) or the document ends; A is the chunk's
  first `a_end` sentences (`a_end` uniform in [1, len(chunk) - 1]); with
  probability `nsp_prob` B is a run of sentences from a random start in
  another document (and the chunk's unused sentences are put back),
  otherwise B is the rest of the chunk; the pair is truncated to fit
  (`truncate_seq_pair`). See the module docstring for the deviations from
  the original script. Empty documents and sentences must be removed before
  (`tokenize_documents` does).

  Args:
    documents: document -> sentence -> token ids (no special tokens); at
      least two documents (random next segments come from another one).
    max_seq_length: T, the padded length; every instance has <= T tokens.
    short_seq_prob: probability of a short target length per pair.
    nsp_prob: probability that B is a random next segment.
    dupe_factor: passes over the data (each with different random choices).
    rng: the only randomness used; same seed -> same instances.
    cls_id: id of [CLS].
    sep_id: id of [SEP].

  Returns:
    Instances in random order.
  """
  if max_seq_length < 5:
    raise ValueError(f'max_seq_length {max_seq_length} < 5 leaves no room '
                     'for two segments')
  if len(documents) < 2:
    raise ValueError('need at least two documents (random next segments '
                     f'come from another document), got {len(documents)}')
  if any(not d or any(not s for s in d) for d in documents):
    raise ValueError('documents and sentences must be non-empty')
  instances: list[Instance] = []
  with progress.bar(total=dupe_factor * len(documents), desc='nsp instances',
                    unit='doc') as bar:
    for _ in range(dupe_factor):
      for doc_index in range(len(documents)):
        _instances_from_document(
            documents, doc_index, max_seq_length=max_seq_length,
            short_seq_prob=short_seq_prob, nsp_prob=nsp_prob, rng=rng,
            cls_id=cls_id, sep_id=sep_id, out=instances)
        bar.update()
  order = rng.permutation(len(instances))
  return [instances[k] for k in order]


# --------------------------------------------------------------------------
# 3. Masked-LM masking.
# --------------------------------------------------------------------------


def _excluded_ids(special_ids: Iterable[int], mask_id: int,
                  vocab_size: int) -> tuple[int, ...]:
  """Sorted unique ids never used as random replacements."""
  return tuple(sorted({int(s) for s in (*special_ids, mask_id)
                      if 0 <= int(s) < vocab_size}))


def _skip_excluded(r, excluded: Sequence[int]):
  """Maps r in [0, V - len(excluded)) to the r-th id not in `excluded`.

  `excluded` must be sorted ascending; works on numpy and jax arrays.
  """
  for s in excluded:
    r = r + (r >= s)
  return r


def continuation_mask(vocab: Sequence[str]) -> np.ndarray:
  """bool [V]: True for WordPiece continuation pieces ('##...')."""
  return np.asarray([t.startswith('##') for t in vocab], bool)


def mask_tokens(ids, *, rng: np.random.Generator, vocab_size: int,
                mask_id: int, special_ids: Iterable[int],
                is_continuation: np.ndarray | None = None,
                masked_lm_prob: float = 0.15, max_predictions_per_seq: int,
                whole_word: bool = False):
  """BERT masking of one sequence (numpy; offline/static masking).

  n = min(P, max(1, round(N * masked_lm_prob))) positions are chosen among
  the N maskable tokens (those not in `special_ids`, which must include
  [CLS], [SEP] and [PAD]); 0 when N == 0. Each chosen token becomes [MASK]
  with probability 0.8, a random token (uniform over the vocabulary minus
  `special_ids` and [MASK]) with 0.1, and stays unchanged with 0.1. With
  `whole_word`, a word (a piece plus the continuation pieces right after
  it) is masked in all its pieces or not at all; words are tried in random
  order and, as in BERT, one that would overshoot n is skipped, so fewer
  than n pieces may be masked.

  Args:
    ids: [L] int token ids (padding allowed; pad id in special_ids).
    rng: numpy Generator.
    vocab_size: V.
    mask_id: id of [MASK].
    special_ids: ids never masked and never used as random replacements.
    is_continuation: bool [V], True for '##' pieces; needed for whole_word.
    masked_lm_prob: fraction of maskable tokens to mask.
    max_predictions_per_seq: P.
    whole_word: mask whole words.

  Returns:
    masked_ids [L] int32; masked_lm_positions [P] int32 (ascending, unique,
    then 0-padding); masked_lm_ids [P] int32 (original ids, 0-padded);
    masked_lm_weights [P] float32 (1 for real predictions, 0 for padding).
  """
  ids = np.asarray(ids, np.int32)
  excluded = _excluded_ids(special_ids, mask_id, vocab_size)
  maskable = ~np.isin(ids, np.asarray(excluded, np.int64))
  candidates = np.flatnonzero(maskable)
  p = max_predictions_per_seq
  n = min(p, max(1, int(round(len(candidates) * masked_lm_prob))))
  n = n if len(candidates) else 0
  if not whole_word:
    chosen = np.sort(rng.permutation(candidates)[:n])
  else:
    if is_continuation is None:
      raise ValueError('whole_word masking needs is_continuation')
    cont = np.asarray(is_continuation, bool)[ids] & maskable
    # A continuation piece joins the word of the token right before it
    # (if that one is maskable); anything else starts a new word.
    joins = cont.copy()
    joins[0] = False
    joins[1:] &= maskable[:-1]
    starts = maskable & ~joins
    word_of = np.cumsum(starts) - 1  # Word index of each position.
    word_starts = np.flatnonzero(starts)
    word_ends = np.append(word_starts[1:], len(ids))
    picked: list[np.ndarray] = []
    count = 0
    for w in rng.permutation(len(word_starts)):
      if count >= n:
        break
      pos = np.arange(word_starts[w], word_ends[w])
      pos = pos[maskable[pos] & (word_of[pos] == w)]
      if count + len(pos) > n:
        continue
      picked.append(pos)
      count += len(pos)
    chosen = np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)
  k = len(chosen)
  kind = rng.random(k)
  random_ids = _skip_excluded(
      rng.integers(0, vocab_size - len(excluded), k), excluded)
  original = ids[chosen]
  replacement = np.where(kind < 0.8, mask_id,
                         np.where(kind < 0.9, random_ids, original))
  masked = ids.copy()
  masked[chosen] = replacement
  positions = np.zeros(p, np.int32)
  lm_ids = np.zeros(p, np.int32)
  weights = np.zeros(p, np.float32)
  positions[:k] = chosen
  lm_ids[:k] = original
  weights[:k] = 1.0
  return masked, positions, lm_ids, weights


@functools.partial(
    jax.jit,
    static_argnames=('vocab_size', 'mask_id', 'excluded', 'masked_lm_prob',
                     'max_predictions_per_seq'))
def _mask_tokens_jax(rng_key, input_ids, input_mask, *, vocab_size, mask_id,
                     excluded, masked_lm_prob, max_predictions_per_seq):
  batch, length = input_ids.shape
  p = max_predictions_per_seq
  k_select, k_kind, k_token = jax.random.split(rng_key, 3)
  maskable = (input_mask > 0) & ~jnp.isin(
      input_ids, jnp.asarray(excluded, input_ids.dtype))
  num_maskable = maskable.sum(-1)
  num_to_mask = jnp.where(
      num_maskable > 0,
      jnp.clip(jnp.round(num_maskable * masked_lm_prob), 1, p), 0)
  # Random scores on maskable positions, -1 elsewhere: top_k returns the
  # maskable positions first, in uniformly random order; keep the first n.
  scores = jnp.where(maskable, jax.random.uniform(k_select, (batch, length)),
                     -1.0)
  _, top = jax.lax.top_k(scores, p)
  keep = jnp.arange(p)[None, :] < num_to_mask[:, None]
  # Sort the kept positions ascending; dropped slots sort last as `length`.
  pos = jnp.sort(jnp.where(keep, top, length), axis=-1)
  real = pos < length
  positions = jnp.where(real, pos, 0).astype(jnp.int32)
  original = jnp.take_along_axis(input_ids, positions, axis=1)
  kind = jax.random.uniform(k_kind, (batch, p))
  random_ids = _skip_excluded(
      jax.random.randint(k_token, (batch, p), 0, vocab_size - len(excluded),
                         dtype=input_ids.dtype), excluded)
  replacement = jnp.where(kind < 0.8, jnp.asarray(mask_id, input_ids.dtype),
                          jnp.where(kind < 0.9, random_ids, original))
  # Padding slots scatter out of bounds and are dropped.
  masked = input_ids.at[jnp.arange(batch)[:, None], pos].set(
      replacement, mode='drop')
  return (masked, positions, jnp.where(real, original, 0).astype(jnp.int32),
          real.astype(jnp.float32))


def mask_tokens_jax(rng_key, input_ids, input_mask, *, vocab_size: int,
                    mask_id: int, special_ids: Iterable[int],
                    masked_lm_prob: float = 0.15,
                    max_predictions_per_seq: int):
  """Dynamic (RoBERTa-style) MLM masking in JAX; jittable, fixed shapes.

  Same statistics as `mask_tokens` (non-whole-word): per example, n =
  min(P, max(1, round(N * masked_lm_prob))) of the N maskable tokens
  (`input_mask` 1 and id not in `special_ids`/[MASK]) are chosen uniformly
  (random scores + top_k), then 80% [MASK], 10% random non-special token,
  10% unchanged. Whole-word masking is not implemented here (it needs the
  word structure, which is cheap in numpy and awkward with fixed shapes):
  use `mask_tokens(..., whole_word=True)` offline for it.

  Call it inside the jitted train step with a key split from the step's RNG;
  the keyword arguments are static (python values).

  Args:
    rng_key: a JAX PRNG key.
    input_ids: [B, T] int32.
    input_mask: [B, T] int (1 real, 0 padding).
    vocab_size: V.
    mask_id: id of [MASK].
    special_ids: ids never masked nor used as random tokens ([CLS], [SEP],
      [PAD], ...).
    masked_lm_prob: fraction of maskable tokens to mask.
    max_predictions_per_seq: P (<= T).

  Returns:
    masked_ids [B, T] int32, masked_lm_positions [B, P] int32 (ascending,
    unique, 0-padded), masked_lm_ids [B, P] int32 (0-padded),
    masked_lm_weights [B, P] float32.
  """
  if max_predictions_per_seq > input_ids.shape[-1]:
    raise ValueError(f'max_predictions_per_seq {max_predictions_per_seq} > '
                     f'sequence length {input_ids.shape[-1]}')
  excluded = _excluded_ids(special_ids, mask_id, vocab_size)
  return _mask_tokens_jax(
      rng_key, input_ids, input_mask, vocab_size=int(vocab_size),
      mask_id=int(mask_id), excluded=excluded,
      masked_lm_prob=float(masked_lm_prob),
      max_predictions_per_seq=int(max_predictions_per_seq))


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """Arguments of `mask_tokens` other than the ids and the rng."""
  vocab_size: int
  mask_id: int
  special_ids: tuple[int, ...]
  max_predictions_per_seq: int
  masked_lm_prob: float = 0.15
  whole_word: bool = False
  is_continuation: np.ndarray | None = None

  def mask(self, ids, rng: np.random.Generator):
    return mask_tokens(
        ids, rng=rng, vocab_size=self.vocab_size, mask_id=self.mask_id,
        special_ids=self.special_ids, is_continuation=self.is_continuation,
        masked_lm_prob=self.masked_lm_prob,
        max_predictions_per_seq=self.max_predictions_per_seq,
        whole_word=self.whole_word)


# --------------------------------------------------------------------------
# 4. Fixed-length features.
# --------------------------------------------------------------------------


def to_features(instance: Instance, max_seq_length: int, *, pad_id: int = 0,
                masking: MaskingConfig | None = None,
                rng: np.random.Generator | None = None) -> Features:
  """Pads an instance to T = max_seq_length; masks it if `masking` is given.

  Returns:
    input_ids [T] int32 (masked when `masking`), input_mask [T] int32,
    segment_ids [T] int32, next_sentence_label [] int32 (1 = random next, as
    in BERT), and with `masking` also masked_lm_positions [P] int32,
    masked_lm_ids [P] int32, masked_lm_weights [P] float32.
  """
  length = len(instance.input_ids)
  if length > max_seq_length:
    raise ValueError(f'instance of length {length} > {max_seq_length}')
  input_ids = np.full(max_seq_length, pad_id, np.int32)
  input_ids[:length] = instance.input_ids
  input_mask = np.zeros(max_seq_length, np.int32)
  input_mask[:length] = 1
  segment_ids = np.zeros(max_seq_length, np.int32)
  segment_ids[:length] = instance.segment_ids
  features = {
      'input_ids': input_ids,
      'input_mask': input_mask,
      'segment_ids': segment_ids,
      'next_sentence_label': np.asarray(int(instance.is_random_next),
                                        np.int32),
  }
  if masking is not None:
    if rng is None:
      raise ValueError('masking needs an rng')
    masked, positions, lm_ids, weights = masking.mask(instance.input_ids, rng)
    features['input_ids'][:length] = masked
    features['masked_lm_positions'] = positions
    features['masked_lm_ids'] = lm_ids
    features['masked_lm_weights'] = weights
  return features


# --------------------------------------------------------------------------
# 5. ArrayRecord shards.
# --------------------------------------------------------------------------


def serialize_example(features: Mapping[str, np.ndarray]) -> bytes:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  return serialization.msgpack_serialize(
      {k: np.asarray(v) for k, v in features.items()})


def deserialize_example(data: bytes) -> Features:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  return {k: np.asarray(v) for k, v in
          serialization.msgpack_restore(data).items()}


def write_shards(examples: Iterable[Mapping[str, np.ndarray]], out_dir: str,
                 num_shards: int, *, prefix: str = 'examples') -> list[str]:
  """Writes examples round-robin into `num_shards` ArrayRecord files.

  Example i goes to shard i % num_shards, so shards differ in size by at
  most one. Files: `<out_dir>/<prefix>-SSSSS-of-NNNNN.array_record`.

  Returns:
    The file paths, in shard order.
  """
  # Imported here so that the masking functions need no array_record.
  from array_record.python import array_record_module as ar
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f'{prefix}-{i:05d}-of-{num_shards:05d}'
                        '.array_record') for i in range(num_shards)]
  writers = [ar.ArrayRecordWriter(p, 'group_size:1') for p in paths]
  try:
    for i, example in enumerate(examples):
      writers[i % num_shards].write(serialize_example(example))
  finally:
    for w in writers:
      w.close()
  return paths


class ShardSource:
  """Random access to one host's share of ArrayRecord example files.

  Files matching `pattern` are sorted by name. If their number is a multiple
  of `num_shards`, host `shard_index` gets whole files
  (`files[shard_index::num_shards]`, so it opens only those); otherwise it
  gets the records whose global index (over the files in order) is
  `shard_index` modulo `num_shards`. Either way the hosts' shares are
  disjoint and cover every record.
  """

  def __init__(self, pattern: str, shard_index: int = 0, num_shards: int = 1):
    from array_record.python import array_record_module as ar
    if not 0 <= shard_index < num_shards:
      raise ValueError(f'shard_index {shard_index} not in [0, {num_shards})')
    if os.path.isdir(pattern):
      pattern = os.path.join(pattern, '*.array_record')
    files = sorted(glob_lib.glob(pattern))
    if not files:
      raise FileNotFoundError(f'no ArrayRecord files match {pattern!r}')
    self.files = files
    by_file = len(files) % num_shards == 0
    mine = files[shard_index::num_shards] if by_file else files
    self._readers = [ar.ArrayRecordReader(f) for f in mine]
    file_idx, rec_idx = [], []
    offset = 0
    for r, reader in enumerate(self._readers):
      n = reader.num_records()
      records = np.arange(n)
      if not by_file:
        records = records[(records + offset) % num_shards == shard_index]
      offset += n
      file_idx.append(np.full(len(records), r, np.int32))
      rec_idx.append(records)
    self._file = np.concatenate(file_idx) if file_idx else np.zeros(0, int)
    self._record = np.concatenate(rec_idx) if rec_idx else np.zeros(0, int)

  def __len__(self) -> int:
    return len(self._file)

  def __getitem__(self, i: int) -> Features:
    return self.get_many([i])[0]

  def get_many(self, indices: Sequence[int]) -> list[Features]:
    """Reads several examples, one batched read per file."""
    indices = np.asarray(indices, np.int64)
    out: list[Features | None] = [None] * len(indices)
    files = self._file[indices]
    for f in np.unique(files):
      where = np.flatnonzero(files == f)
      data = self._readers[f].read(
          [int(r) for r in self._record[indices[where]]])
      for w, d in zip(where, data):
        out[w] = deserialize_example(d)
    return out  # type: ignore[return-value]

  def close(self) -> None:
    for r in self._readers:
      r.close()
    self._readers = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_shards(pattern: str, shard_index: int = 0, num_shards: int = 1, *,
                block: int = 1024) -> Iterator[Features]:
  """Yields host `shard_index`'s examples in file/record order.

  See `ShardSource` for which records a host gets.
  """
  with ShardSource(pattern, shard_index, num_shards) as source:
    for start in range(0, len(source), block):
      yield from source.get_many(range(start, min(start + block,
                                                  len(source))))


# --------------------------------------------------------------------------
# 6. Training input iterator.
# --------------------------------------------------------------------------


class PretrainingIterator:
  """Infinite, deterministic, resumable batches of pretraining features.

  Two modes:
    * global (`source_is_host_shard=False`, e.g. in-memory examples every
      host holds): epoch e visits the N examples in the order
      `default_rng([seed, e]).permutation(N)`; global batch k is the k-th
      `batch_size` slice, and host h yields rows
      `[h * b, (h + 1) * b)` of it, b = batch_size // num_hosts. The hosts'
      batches concatenate to exactly the single-host batch.
    * per host (`source_is_host_shard=True`, e.g. `ShardSource` of this
      host): epoch e visits this host's examples in the order
      `default_rng([seed, e, host_index]).permutation(len(source))`, b at a
      time. Hosts with one batch more or less roll into the next epoch a
      step apart, which is harmless.
  A final partial batch of each epoch is dropped (a different remainder
  each epoch). The position is `get_state()` (a small JSON-able dict to put
  in the checkpoint); `set_state` restores it exactly. The order, position
  and host rows follow `bert_jax.data.batching`, as fine-tuning's
  `ArrayIterator` does.

  Yields:
    dict of numpy arrays [b, ...] (e.g. input_ids [b, T] int32).
  """

  def __init__(self, source, *, batch_size: int, seed: int,
               num_hosts: int = 1, host_index: int = 0,
               source_is_host_shard: bool = False, shuffle: bool = True):
    if batch_size % num_hosts:
      raise ValueError(f'batch_size {batch_size} not divisible by '
                       f'num_hosts {num_hosts}')
    if not 0 <= host_index < num_hosts:
      raise ValueError(f'host_index {host_index} not in [0, {num_hosts})')
    self._source = source
    self._batch_size = batch_size
    self._per_host = batch_size // num_hosts
    self._seed = int(seed)
    self._num_hosts = num_hosts
    self._host_index = host_index
    self._host_shard = source_is_host_shard
    self._shuffle = shuffle
    step_examples = self._per_host if source_is_host_shard else batch_size
    steps_per_epoch = len(source) // step_examples
    if steps_per_epoch == 0:
      raise ValueError(f'{len(source)} examples make no batch of '
                       f'{step_examples}')
    self._cursor = batching.EpochCursor(self._epoch_order,
                                        step_size=step_examples,
                                        steps_per_epoch=steps_per_epoch)

  @classmethod
  def from_instances(cls, instances: Sequence[Instance], *,
                     max_seq_length: int, batch_size: int, seed: int,
                     masking: MaskingConfig | None = None, pad_id: int = 0,
                     **kwargs) -> 'PretrainingIterator':
    """In memory: featurises (and, with `masking`, statically masks, from
    `seed`) all instances; every host holds all and takes its batch rows."""
    rng = np.random.default_rng([seed, 0x6D61736B])  # Masks: own stream.
    features = [to_features(x, max_seq_length, pad_id=pad_id,
                            masking=masking, rng=rng) for x in instances]
    return cls(features, batch_size=batch_size, seed=seed, **kwargs)

  @classmethod
  def from_shards(cls, pattern: str, *, batch_size: int, seed: int,
                  num_hosts: int = 1, host_index: int = 0,
                  **kwargs) -> 'PretrainingIterator':
    """From ArrayRecord shards: each host reads only its `ShardSource`."""
    return cls(ShardSource(pattern, host_index, num_hosts),
               batch_size=batch_size, seed=seed, num_hosts=num_hosts,
               host_index=host_index, source_is_host_shard=True, **kwargs)

  @property
  def steps_per_epoch(self) -> int:
    return self._cursor.steps_per_epoch

  def _epoch_order(self, epoch: int) -> np.ndarray:
    n = len(self._source)
    if not self._shuffle:
      return np.arange(n)
    host = (self._host_index,) if self._host_shard else ()
    return batching.epoch_rng(self._seed, epoch, *host).permutation(n)

  def __iter__(self) -> 'PretrainingIterator':
    return self

  def __next__(self) -> Features:
    indices = self._cursor.next()
    if not self._host_shard:   # a global batch: this host's rows of it
      indices = batching.host_rows(indices, self._host_index, self._per_host)
    if hasattr(self._source, 'get_many'):
      examples = self._source.get_many(indices)
    else:
      examples = [self._source[int(i)] for i in indices]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}

  def get_state(self) -> dict[str, int]:
    """The position (and what it is valid for), as plain ints."""
    return {'epoch': self._cursor.epoch, 'step': self._cursor.step,
            'seed': self._seed, 'num_examples': len(self._source),
            'batch_size': self._batch_size, 'num_hosts': self._num_hosts,
            'host_index': self._host_index}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a `get_state()` position; the setup must match.

    In memory the position is global (step s is the same global batch on any
    number of hosts), so a run may resume on another host count. Per-host
    shards are ordered per host, so their host layout must match."""
    mine = self.get_state()
    keys = ('seed', 'batch_size', 'num_examples')
    if self._host_shard:
      keys = ('num_hosts', 'host_index') + keys
    batching.check_state(state, {k: mine[k] for k in keys})
    self._cursor.seek(state['epoch'], state['step'])


# --------------------------------------------------------------------------
# 7. Command line.
# --------------------------------------------------------------------------


def _parse_args(argv):
  p = argparse.ArgumentParser(
      prog='python -m bert_jax.pretraining_data',
      description='Writes BERT pretraining examples as ArrayRecord shards.')
  p.add_argument('--corpus', required=True,
                 help="'sotu', 'bbc', 'msra', 'tfds:<name>', or a path/glob")
  p.add_argument('--vocab', required=True, help='WordPiece vocab.txt')
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--max_seq_length', type=int, default=128)
  p.add_argument('--max_predictions_per_seq', type=int, default=20)
  p.add_argument('--masked_lm_prob', type=float, default=0.15)
  p.add_argument('--short_seq_prob', type=float, default=0.1)
  p.add_argument('--nsp_prob', type=float, default=0.5)
  p.add_argument('--dupe_factor', type=int, default=5)
  p.add_argument('--num_shards', type=int, default=8)
  p.add_argument('--seed', type=int, default=12345)
  p.add_argument('--whole_word', action='store_true',
                 help='whole-word masking')
  p.add_argument('--no_mask', action='store_true',
                 help='write unmasked examples (mask dynamically in training)')
  p.add_argument('--cased', action='store_true',
                 help='do not lowercase (for cased vocabularies)')
  p.add_argument('--layout', default='bert', choices=('bert', 'file'),
                 help='for path corpora: blank-line or one-file documents')
  p.add_argument('--corpus_shard_index', type=int, default=0,
                 help='read only this shard of the corpus documents')
  p.add_argument('--corpus_num_shards', type=int, default=1)
  p.add_argument('--tfds_data_dir', default=None)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Corpus -> tokens -> instances -> (masked) examples -> shards."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from bert_jax.data import corpora  # pylint: disable=g-import-not-at-top
  args = _parse_args(argv)
  t0 = time.time()
  with open(args.vocab, encoding='utf-8') as f:
    vocab = [line.rstrip('\n') for line in f]
  tok = tokenizers.BertWordPieceTokenizer(args.vocab,
                                          lowercase=not args.cased)
  ids = {name: tok.token_to_id(name)
         for name in ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')}
  if any(v is None for v in ids.values()):
    raise ValueError(f'vocab lacks special tokens: {ids}')
  load_stats = corpora.LoadStats()
  documents = corpora.load_documents(
      args.corpus, shard_index=args.corpus_shard_index,
      num_shards=args.corpus_num_shards, layout=args.layout,
      tfds_data_dir=args.tfds_data_dir, stats=load_stats)
  tokenized = tokenize_documents(
      documents, lambda s: [e.ids for e in tok.encode_batch(
          s, add_special_tokens=False)])
  rng = np.random.default_rng(args.seed)
  instances = create_nsp_instances(
      tokenized, max_seq_length=args.max_seq_length,
      short_seq_prob=args.short_seq_prob, nsp_prob=args.nsp_prob,
      dupe_factor=args.dupe_factor, rng=rng, cls_id=ids['[CLS]'],
      sep_id=ids['[SEP]'])
  masking = None
  if not args.no_mask:
    masking = MaskingConfig(
        vocab_size=len(vocab), mask_id=ids['[MASK]'],
        # [UNK] is not masked either: predicting it teaches nothing.
        special_ids=tuple(sorted(ids.values())),
        max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob, whole_word=args.whole_word,
        is_continuation=continuation_mask(vocab))
  special = np.asarray(sorted(ids.values()))
  counts = dict(examples=0, random_next=0, real_tokens=0, maskable=0,
                masked=0)

  def featurised():
    for instance in instances:
      f = to_features(instance, args.max_seq_length, pad_id=ids['[PAD]'],
                      masking=masking, rng=rng)
      counts['examples'] += 1
      counts['random_next'] += int(instance.is_random_next)
      counts['real_tokens'] += len(instance.input_ids)
      counts['maskable'] += int((~np.isin(instance.input_ids,
                                          special)).sum())
      if masking is not None:
        counts['masked'] += int(f['masked_lm_weights'].sum())
      yield f

  paths = write_shards(featurised(), args.out, args.num_shards)
  n = max(counts['examples'], 1)
  report = {
      'corpus': args.corpus, 'documents': load_stats.documents,
      'sentences': load_stats.sentences,
      'skipped_empty_documents': load_stats.skipped_empty,
      'examples': counts['examples'], 'real_tokens': counts['real_tokens'],
      'random_next_fraction': round(counts['random_next'] / n, 4),
      'masked_fraction_of_maskable': (
          round(counts['masked'] / max(counts['maskable'], 1), 4)
          if masking is not None else None),
      'shards': paths, 'seconds': round(time.time() - t0, 1),
  }
  print(json.dumps(report, indent=1))
  return report


if __name__ == '__main__':
  main(sys.argv[1:])
