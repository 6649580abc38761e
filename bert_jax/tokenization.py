"""BERT WordPiece tokenization (on HF `tokenizers`) and vocabulary training.

`BertTokenizer` reproduces `transformers.BertTokenizer` (the slow Python
reference) on top of the Rust `tokenizers.Tokenizer`: same normalisation
(control-character removal, CJK splitting, NFC, lower-casing, accent
stripping), same punctuation split, same greedy longest-match WordPiece and
the same pair truncation. The Rust library does the per-token work (and runs
batches in parallel); this module adds vocabulary validation, truncation and
the assembly of the special tokens, so that every field of `Encoding` is
defined here rather than by library defaults.

The stock Rust `BertNormalizer`/`BertPreTokenizer` (what
`BertTokenizerFast` uses) are not used: their Unicode tables are older than
Python's, they miss CJK Extension E and skip the slow tokenizer's NFC step,
so they disagree with it on ~49k code points. The same steps are built here
from `tokenizers` regex normalisers whose character classes come from the
running Python's `unicodedata`, which is what the slow tokenizer consults;
the slow tests check equality on every assigned code point.

Deliberate differences from the slow reference:

* Truncation that cannot be done. Where `only_first`/`only_second` cannot
  reach `max_length` the slow tokenizer logs an error and returns the
  untruncated sequence; `encode` raises `ValueError` instead. It also
  truncates a sequence to zero tokens where that exactly fits, which the
  slow tokenizer refuses to do for `only_*` strategies (it logs and does not
  truncate).
* `truncation` applies only when `max_length` is given (transformers falls
  back to `model_max_length`).

Vocabulary training:

* `train_wordpiece` (`--kind=wordpiece`): WordPiece by the likelihood
  criterion, merging the pair (x, y) with the highest
  count(xy) / (count(x) count(y)) (Schuster & Nakajima 2012, BERT); pure
  Python with incremental pair counts (`LikelihoodMerger`).
* `train_wordpiece_freq` (`--kind=wordpiece_freq`): the `tokenizers`
  WordPiece trainer, which merges the most frequent pair (BPE merges with
  `##` prefixes).
* `train_bpe` (`--kind=bpe`): byte-level BPE (GPT-2/RoBERTa style).

All three are deterministic. The stock `tokenizers` WordPiece trainer gives the
`##` pieces ids in hash-map order, and those ids break ties between equally
frequent merges, so two runs on the same text can give different vocabularies
(huggingface/tokenizers#1794); `train_wordpiece_freq` counts the alphabet and
its `##` pieces first and hands them to the trainer in sorted order, which
fixes every id before the first merge.

Command line::

  python -m bert_jax.tokenization train --corpus=sotu --vocab_size=8000 \
      --kind=wordpiece --out=/tmp/vocab
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import heapq
import itertools
import json
import os
import pathlib
import re
import sys
import time
import unicodedata
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors
from tokenizers import trainers

from bert_jax.data import corpora
from bert_jax.data import registry

PAD = '[PAD]'
UNK = '[UNK]'
CLS = '[CLS]'
SEP = '[SEP]'
MASK = '[MASK]'
# Order of the special tokens at the head of a trained vocabulary; [PAD] is id
# 0 as in Google's BERT vocabularies, so zero-initialised buffers are padding.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION_PREFIX = '##'
TRUNCATION_STRATEGIES = ('longest_first', 'only_first', 'only_second')

_CONFIG_FILE = 'tokenizer_config.json'
_VOCAB_FILE = 'vocab.txt'
_CONFIG_SPECIAL_KEYS = {
    'pad_token': PAD, 'unk_token': UNK, 'cls_token': CLS,
    'sep_token': SEP, 'mask_token': MASK,
}


@dataclasses.dataclass
class Encoding:
  """One encoded example (a single text or a pair).

  Attributes:
    ids: token ids, special tokens included.
    token_type_ids: 0 for `[CLS]`, the first text and its `[SEP]`; 1 for the
      second text and the final `[SEP]`. All 0 when special tokens are not
      added (as in transformers; `sequence_ids` still separates the texts).
    attention_mask: all ones (no padding is added here).
    offsets: `(start, end)` character offsets of each token into its own
      input text (into its own word for pre-tokenized input); `(0, 0)` for
      special tokens.
    word_ids: index of the word each token came from, counted within its own
      text (words are the whitespace/punctuation split, or the given words for
      pre-tokenized input); None for special tokens.
    sequence_ids: 0 or 1 for tokens of the first or second text, None for
      special tokens.
    num_truncated: how many tokens truncation removed (both texts together).
  """
  ids: list[int]
  token_type_ids: list[int]
  attention_mask: list[int]
  offsets: list[tuple[int, int]]
  word_ids: list[Optional[int]]
  sequence_ids: list[Optional[int]]
  num_truncated: int = 0

  def __len__(self) -> int:
    return len(self.ids)


def read_vocab(vocab_path: Union[str, os.PathLike]) -> list[str]:
  """Reads and validates a WordPiece vocabulary file, one token per line.

  Lines are split the way `transformers` reads them (universal newlines,
  only the line terminator removed), so tokens such as U+2028 that
  `str.splitlines` would break survive.

  Args:
    vocab_path: path to `vocab.txt`.

  Returns:
    The tokens in id order.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is empty, has an empty line, a duplicate token, or
      lacks one of the special tokens.
  """
  path = pathlib.Path(vocab_path)
  if not path.is_file():
    raise FileNotFoundError(f'vocabulary file not found: {path}')
  with open(path, encoding='utf-8') as f:
    tokens = [line.rstrip('\n') for line in f]
  return _validate_vocab(tokens, str(path))


def _validate_vocab(tokens: Sequence[str], source: str) -> list[str]:
  """Checks a vocabulary; errors name `source` and the 1-based line."""
  tokens = list(tokens)
  if not tokens:
    raise ValueError(f'{source}: vocabulary is empty')
  first_line = {}
  for line_no, token in enumerate(tokens, start=1):
    if not isinstance(token, str):
      raise ValueError(f'{source}:{line_no}: token is not a string: {token!r}')
    if not token:
      # An empty line shifts every later id by one; almost always a damaged
      # file, and no input can ever produce the empty token.
      raise ValueError(f'{source}:{line_no}: empty token')
    if token in first_line:
      raise ValueError(f'{source}:{line_no}: duplicate token {token!r} '
                       f'(first on line {first_line[token]})')
    first_line[token] = line_no
  missing = [t for t in SPECIAL_TOKENS if t not in first_line]
  if missing:
    raise ValueError(f'{source}: missing special token(s) {missing} '
                     f'(checked lines 1-{len(tokens)})')
  return tokens


# CJK Unified Ideograph blocks that BERT treats as single-character words
# (the ranges of transformers' `_is_chinese_char`; Hangul, kana etc. are not
# included there and are not here).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
# ASCII symbols BERT splits off although Unicode files some under S*/Sm/Sk.
_ASCII_PUNCT_RANGES = ((33, 47), (58, 64), (91, 96), (123, 126))


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
  merged = []
  for lo, hi in sorted(ranges):
    if merged and lo <= merged[-1][1] + 1:
      merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
    else:
      merged.append((lo, hi))
  return merged


def _remove_points(ranges: list[tuple[int, int]],
                   points: Iterable[int]) -> list[tuple[int, int]]:
  for p in points:
    out = []
    for lo, hi in ranges:
      if lo <= p <= hi:
        out.extend(r for r in ((lo, p - 1), (p + 1, hi)) if r[0] <= r[1])
      else:
        out.append((lo, hi))
    ranges = out
  return ranges


def _onig_class(ranges: Sequence[tuple[int, int]]) -> str:
  """A character class in the Oniguruma syntax of `tokenizers.Regex`."""
  parts = []
  for lo, hi in ranges:
    parts.append(f'\\x{{{lo:X}}}' if lo == hi
                 else f'\\x{{{lo:X}}}-\\x{{{hi:X}}}')
  return '[' + ''.join(parts) + ']'


def _python_class_body(ranges: Sequence[tuple[int, int]]) -> str:
  """The inside of a Python `re` character class for the same ranges."""
  parts = []
  for lo, hi in ranges:
    parts.append(f'\\U{lo:08X}' if lo == hi
                 else f'\\U{lo:08X}-\\U{hi:08X}')
  return ''.join(parts)


@functools.lru_cache(maxsize=None)
def _char_ranges() -> dict[str, tuple[tuple[int, int], ...]]:
  """Code-point ranges for BERT's character tests, from `unicodedata`.

  The Rust `BertNormalizer`/`BertPreTokenizer` use their own, older Unicode
  tables (and miss CJK Extension E, U+2B820-U+2B91F); on ~49k code points
  (mostly unassigned ones, which Python calls control characters) they
  disagree with transformers' slow tokenizer. Deriving the classes from the
  running Python's tables, as the slow tokenizer does, makes the two agree on
  every code point. Built once per process (~0.3 s).
  """
  cats = list(map(unicodedata.category, map(chr, range(sys.maxunicode + 1))))
  control, punct, marks, space_candidates = [], [], [], []
  start = 0
  for cat, group in itertools.groupby(cats):
    end = start + sum(1 for _ in group) - 1
    run = (start, end)
    start = end + 1
    if cat == 'Cs':
      continue  # lone surrogates cannot reach the Rust side
    if cat[0] == 'C':
      control.append(run)
    elif cat[0] == 'P':
      punct.append(run)
    elif cat == 'Mn':
      marks.append(run)
    if cat in ('Cc', 'Zs', 'Zl', 'Zp'):
      space_candidates.append(run)
  # transformers `_clean_text`: drop NUL, U+FFFD and every C* character except
  # tab/newline/return (which count as whitespace).
  control = _merge_ranges(_remove_points(control, (9, 10, 13)) +
                          [(0xFFFD, 0xFFFD)])
  # `whitespace_tokenize` is `str.split()`, i.e. `str.isspace`.
  space = _merge_ranges((cp, cp) for lo, hi in space_candidates
                        for cp in range(lo, hi + 1) if chr(cp).isspace())
  punct = _merge_ranges(punct + list(_ASCII_PUNCT_RANGES))
  return {
      'control': tuple(control),
      'space': tuple(space),
      'punct': tuple(punct),
      'punct_cjk': tuple(_merge_ranges(punct + list(_CJK_RANGES))),
      'marks': tuple(_merge_ranges(marks)),
  }


@functools.lru_cache(maxsize=None)
def _python_word_pattern(tokenize_chinese_chars: bool) -> 're.Pattern[str]':
  """Python `re` equivalent of the `_bert_pipeline` pre-tokenizer.

  Used to count training words: the Rust pre-tokenizer is exact but slow to
  return ~2M words to Python, and both are built from the same ranges.
  """
  ranges = _char_ranges()
  isolated = _python_class_body(
      ranges['punct_cjk' if tokenize_chinese_chars else 'punct'])
  space = _python_class_body(ranges['space'])
  return re.compile(f'[{isolated}]|[^{space}{isolated}]+')


def _bert_pipeline(lowercase: bool, strip_accents: bool,
                   tokenize_chinese_chars: bool):
  """BERT's basic tokenisation as a (normalizer, pre_tokenizer) pair.

  Mirrors transformers' `BasicTokenizer`: remove control characters, NFC,
  lower-case, strip accents (NFD, then drop non-spacing marks, without
  recomposing), split on whitespace, and isolate punctuation and (optionally)
  CJK ideographs as one-character words. Isolating CJK characters in the
  pre-tokenizer splits words exactly where the slow tokenizer's added spaces
  would, while offsets still point into the original text.
  """
  ranges = _char_ranges()

  def regex(name):
    return tokenizers.Regex(_onig_class(ranges[name]))

  steps = [normalizers.Replace(regex('control'), ''), normalizers.NFC()]
  if lowercase:
    steps.append(normalizers.Lowercase())
  if strip_accents:
    steps += [normalizers.NFD(), normalizers.Replace(regex('marks'), '')]
  isolated = 'punct_cjk' if tokenize_chinese_chars else 'punct'
  pre = pre_tokenizers.Sequence([
      pre_tokenizers.Split(regex('space'), 'removed'),
      pre_tokenizers.Split(regex(isolated), 'isolated'),
  ])
  return normalizers.Sequence(steps), pre


def _resolve_strip_accents(do_lower_case: bool,
                           strip_accents: Optional[bool]) -> bool:
  # As in transformers: unset means "strip exactly when lower-casing".
  return do_lower_case if strip_accents is None else bool(strip_accents)


def _truncated_lengths(len_a: int, len_b: Optional[int], budget: int,
                       strategy: str) -> tuple[int, Optional[int]]:
  """How many tokens of each text to keep so both fit in `budget`.

  `longest_first` follows transformers' slow tokenizer: the longer text is
  cut down to the length of the shorter, then both lose half of what is
  still over; an odd token comes off the second text. (The Rust truncation
  splits an odd remainder the other way when the second text is at least as
  long as the first, so it is not used here.)

  Raises:
    ValueError: the strategy cannot meet the budget.
  """
  if len_b is None:
    if strategy == 'only_second':
      raise ValueError("truncation='only_second' needs a text pair")
    return min(len_a, budget), None
  excess = len_a + len_b - budget
  if excess <= 0:
    return len_a, len_b
  if strategy == 'longest_first':
    first = min(abs(len_a - len_b), excess)
    second = excess - first
    if len_a > len_b:
      drop_a, drop_b = first + second // 2, second - second // 2
    else:
      drop_a, drop_b = second // 2, first + second - second // 2
    return len_a - drop_a, len_b - drop_b
  if strategy == 'only_first':
    if excess > len_a:
      raise ValueError(
          f"truncation='only_first' cannot fit the pair in the length budget: "
          f'the second text alone has {len_b} tokens, budget {budget}')
    return len_a - excess, len_b
  if excess > len_b:
    raise ValueError(
        f"truncation='only_second' cannot fit the pair in the length budget: "
        f'the first text alone has {len_a} tokens, budget {budget}')
  return len_a, len_b - excess


class BertTokenizer:
  """BERT WordPiece tokenizer, equal in ids to `transformers.BertTokenizer`.

  Special tokens appearing verbatim in the input (e.g. "[MASK]") are kept as
  those tokens, as in transformers.
  """

  def __init__(self, vocab: Sequence[str], *, do_lower_case: bool = True,
               strip_accents: Optional[bool] = None,
               tokenize_chinese_chars: bool = True,
               max_input_chars_per_word: int = 100,
               model_max_length: Optional[int] = None,
               source: str = '<vocab>'):
    """Builds a tokenizer from tokens in id order.

    Args:
      vocab: tokens in id order; must contain the five BERT special tokens.
      do_lower_case: lower-case the input.
      strip_accents: remove combining marks after NFD; None follows
        `do_lower_case`.
      tokenize_chinese_chars: make each CJK ideograph a word of its own.
      max_input_chars_per_word: longer words become `[UNK]`.
      model_max_length: recorded for callers (from tokenizer_config.json);
        never applied implicitly.
      source: name used in error messages.
    """
    if max_input_chars_per_word < 1:
      raise ValueError('max_input_chars_per_word must be positive, got '
                       f'{max_input_chars_per_word}')
    self._tokens = _validate_vocab(vocab, source)
    self._ids = {t: i for i, t in enumerate(self._tokens)}
    self.do_lower_case = bool(do_lower_case)
    self.strip_accents = _resolve_strip_accents(do_lower_case, strip_accents)
    self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
    self.max_input_chars_per_word = int(max_input_chars_per_word)
    self.model_max_length = model_max_length
    self.source = source

    self.pad_id = self._ids[PAD]
    self.unk_id = self._ids[UNK]
    self.cls_id = self._ids[CLS]
    self.sep_id = self._ids[SEP]
    self.mask_id = self._ids[MASK]
    self._special_ids = frozenset(self._ids[t] for t in SPECIAL_TOKENS)
    # The bare '##' token cannot be produced as a continuation piece (it would
    # need an empty remainder), so only longer tokens count.
    is_cont = np.array([len(t) > len(CONTINUATION_PREFIX)
                        and t.startswith(CONTINUATION_PREFIX)
                        for t in self._tokens], dtype=bool)
    is_cont.setflags(write=False)  # shared; callers must not edit it
    self.is_continuation = is_cont

    backend = tokenizers.Tokenizer(models.WordPiece(
        vocab=dict(self._ids), unk_token=UNK,
        max_input_chars_per_word=self.max_input_chars_per_word,
        continuing_subword_prefix=CONTINUATION_PREFIX))
    backend.normalizer, backend.pre_tokenizer = _bert_pipeline(
        self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars)
    # Not used by `encode` (which assembles specials itself) but makes the
    # backend a complete BERT tokenizer for anyone using it directly.
    backend.post_processor = processors.TemplateProcessing(
        single=f'{CLS} $A {SEP}', pair=f'{CLS} $A {SEP} $B:1 {SEP}:1',
        special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    # normalized=False: matched on the raw text, before lower-casing, like
    # transformers' special-token split ("[mask]" is not the mask token).
    backend.add_special_tokens([
        tokenizers.AddedToken(t, special=True, normalized=False)
        for t in SPECIAL_TOKENS])
    self.backend = backend

  # --- constructors ---------------------------------------------------------

  @classmethod
  def from_vocab(cls, vocab_path: Union[str, os.PathLike],
                 **options) -> 'BertTokenizer':
    """Loads `vocab.txt`; options as for `__init__`."""
    tokens = read_vocab(vocab_path)
    return cls(tokens, source=str(vocab_path), **options)

  @classmethod
  def from_pretrained_dir(cls, directory: Union[str, os.PathLike],
                          **overrides) -> 'BertTokenizer':
    """Loads `vocab.txt` and, when present, `tokenizer_config.json`.

    The config supplies `do_lower_case`, `strip_accents`,
    `tokenize_chinese_chars` and `model_max_length`; keyword `overrides` win.
    Settings this class cannot honour (`do_basic_tokenize: false`, a
    `never_split` list, other special-token strings) raise `ValueError`
    rather than being silently ignored.
    """
    directory = pathlib.Path(directory)
    vocab_path = directory / _VOCAB_FILE
    options = {}
    config_path = directory / _CONFIG_FILE
    if config_path.is_file():
      with open(config_path, encoding='utf-8') as f:
        try:
          config = json.load(f)
        except json.JSONDecodeError as e:
          raise ValueError(f'{config_path}: invalid JSON: {e}') from e
      if not isinstance(config, dict):
        raise ValueError(f'{config_path}: expected a JSON object')
      for key in ('do_lower_case', 'strip_accents', 'tokenize_chinese_chars',
                  'model_max_length'):
        if key in config:
          options[key] = config[key]
      if config.get('do_basic_tokenize', True) is not True:
        raise ValueError(f'{config_path}: do_basic_tokenize=false is not '
                         'supported')
      if config.get('never_split'):
        raise ValueError(f'{config_path}: never_split is not supported')
      for key, expected in _CONFIG_SPECIAL_KEYS.items():
        value = config.get(key, expected)
        if isinstance(value, dict):  # AddedToken serialised as a dict
          value = value.get('content')
        if value != expected:
          raise ValueError(f'{config_path}: {key}={value!r}; only {expected!r}'
                           ' is supported')
    options.update(overrides)
    return cls.from_vocab(vocab_path, **options)

  def save(self, directory: Union[str, os.PathLike]) -> pathlib.Path:
    """Writes `vocab.txt` and `tokenizer_config.json` (readable by
    `from_pretrained_dir` and by `transformers.BertTokenizer`)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_vocab(directory / _VOCAB_FILE, self._tokens)
    _write_bert_config(directory, do_lower_case=self.do_lower_case,
                       strip_accents=self.strip_accents,
                       tokenize_chinese_chars=self.tokenize_chinese_chars,
                       model_max_length=self.model_max_length)
    return directory

  # --- vocabulary -----------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return len(self._tokens)

  def __len__(self) -> int:
    return len(self._tokens)

  def __repr__(self) -> str:
    return (f'BertTokenizer(vocab_size={self.vocab_size}, '
            f'source={self.source!r}, do_lower_case={self.do_lower_case}, '
            f'strip_accents={self.strip_accents}, '
            f'tokenize_chinese_chars={self.tokenize_chinese_chars})')

  @property
  def special_ids(self) -> set[int]:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK] (a fresh set each call)."""
    return set(self._special_ids)

  def token_to_id(self, token: str) -> int:
    """Id of `token`; KeyError if it is not in the vocabulary."""
    return self._ids[token]

  def id_to_token(self, token_id: int) -> str:
    """Token with id `token_id`; IndexError if out of range."""
    if not 0 <= token_id < len(self._tokens):
      raise IndexError(f'token id {token_id} out of range '
                       f'[0, {len(self._tokens)})')
    return self._tokens[token_id]

  def vocab_tokens(self) -> list[str]:
    """All tokens in id order (a copy)."""
    return list(self._tokens)

  # --- encoding -------------------------------------------------------------

  def tokenize(self, text: str) -> list[str]:
    """WordPiece tokens of `text`, without special tokens."""
    _check_text(text, 'text')
    return self.backend.encode(text, add_special_tokens=False).tokens

  def encode(self, text: str, text_pair: Optional[str] = None, *,
             max_length: Optional[int] = None,
             truncation: Optional[str] = 'longest_first',
             add_special_tokens: bool = True) -> Encoding:
    """Encodes a text or a pair of texts.

    Args:
      text: first text.
      text_pair: optional second text.
      max_length: total length limit, special tokens included; None means
        no limit.
      truncation: how to meet `max_length`: 'longest_first', 'only_first',
        'only_second', or None to never truncate (the result may then be
        longer than `max_length`).
      add_special_tokens: add `[CLS] ... [SEP] (... [SEP])`.

    Returns:
      An `Encoding`.
    """
    _check_text(text, 'text')
    if text_pair is not None:
      _check_text(text_pair, 'text_pair')
    self._check_truncation(max_length, truncation, text_pair is not None,
                           add_special_tokens)
    first = self.backend.encode(text, add_special_tokens=False)
    second = (None if text_pair is None else
              self.backend.encode(text_pair, add_special_tokens=False))
    return self._assemble(first, second, max_length, truncation,
                          add_special_tokens)

  def encode_batch(self, texts: Sequence[str],
                   text_pairs: Optional[Sequence[str]] = None, *,
                   max_length: Optional[int] = None,
                   truncation: Optional[str] = 'longest_first',
                   add_special_tokens: bool = True) -> list[Encoding]:
    """`encode` over a batch; tokenisation runs in parallel in Rust."""
    texts = _check_batch(texts, 'texts', _check_text)
    if text_pairs is not None:
      text_pairs = _check_batch(text_pairs, 'text_pairs', _check_text)
      if len(text_pairs) != len(texts):
        raise ValueError(f'{len(texts)} texts but {len(text_pairs)} '
                         'text_pairs')
    return self._encode_many(texts, text_pairs, False, max_length, truncation,
                             add_special_tokens)

  def encode_pretokenized(self, words: Sequence[str],
                          word_pair: Optional[Sequence[str]] = None, *,
                          max_length: Optional[int] = None,
                          truncation: Optional[str] = 'longest_first',
                          add_special_tokens: bool = True) -> Encoding:
    """Encodes text already split into words (e.g. for tagging).

    Each word is normalised and split further on punctuation, so a word can
    give several tokens; `word_ids` index into `words` (or `word_pair`), and
    `offsets` are into the word itself. A word that normalises to nothing
    (e.g. only control characters) gives no tokens.
    """
    _check_words(words, 'words')
    if word_pair is not None:
      _check_words(word_pair, 'word_pair')
    return self._encode_many(
        [list(words)], None if word_pair is None else [list(word_pair)], True,
        max_length, truncation, add_special_tokens)[0]

  def encode_pretokenized_batch(
      self, batch_words: Sequence[Sequence[str]],
      batch_word_pairs: Optional[Sequence[Sequence[str]]] = None, *,
      max_length: Optional[int] = None,
      truncation: Optional[str] = 'longest_first',
      add_special_tokens: bool = True) -> list[Encoding]:
    """`encode_pretokenized` over a batch, in parallel in Rust."""
    batch_words = [list(w) for w in
                   _check_batch(batch_words, 'batch_words', _check_words)]
    if batch_word_pairs is not None:
      batch_word_pairs = [list(w) for w in _check_batch(
          batch_word_pairs, 'batch_word_pairs', _check_words)]
      if len(batch_word_pairs) != len(batch_words):
        raise ValueError(f'{len(batch_words)} word lists but '
                         f'{len(batch_word_pairs)} pairs')
    return self._encode_many(batch_words, batch_word_pairs, True, max_length,
                             truncation, add_special_tokens)

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Joins WordPiece tokens back into text (lossy: case, accents, spaces)."""
    return self.backend.decode(list(ids),
                               skip_special_tokens=skip_special_tokens)

  def _encode_many(self, firsts, seconds, is_pretokenized, max_length,
                   truncation, add_special_tokens) -> list[Encoding]:
    self._check_truncation(max_length, truncation, seconds is not None,
                           add_special_tokens)
    # Each text is tokenised on its own (as the pair path in Rust does too);
    # pairs are joined in `_assemble` so truncation follows transformers.
    encs_a = self.backend.encode_batch(
        firsts, is_pretokenized=is_pretokenized, add_special_tokens=False)
    if seconds is None:
      return [self._assemble(a, None, max_length, truncation,
                             add_special_tokens) for a in encs_a]
    encs_b = self.backend.encode_batch(
        seconds, is_pretokenized=is_pretokenized, add_special_tokens=False)
    return [self._assemble(a, b, max_length, truncation, add_special_tokens)
            for a, b in zip(encs_a, encs_b)]

  def _check_truncation(self, max_length, truncation, is_pair,
                        add_special_tokens) -> None:
    if truncation is not None and truncation not in TRUNCATION_STRATEGIES:
      raise ValueError(f'truncation must be one of {TRUNCATION_STRATEGIES} '
                       f'or None, got {truncation!r}')
    if max_length is None:
      return
    if isinstance(max_length, bool) or not isinstance(max_length, int):
      raise TypeError(f'max_length must be an int, got {max_length!r}')
    n_special = (3 if is_pair else 2) if add_special_tokens else 0
    if max_length < n_special:
      raise ValueError(f'max_length={max_length} leaves no room for the '
                       f'{n_special} special tokens')
    if truncation == 'only_second' and not is_pair:
      raise ValueError("truncation='only_second' needs a text pair")

  def _assemble(self, a: tokenizers.Encoding,
                b: Optional[tokenizers.Encoding], max_length: Optional[int],
                truncation: Optional[str],
                add_special_tokens: bool) -> Encoding:
    """Truncates the two token sequences and adds the special tokens."""
    ids_a, off_a, wid_a = a.ids, a.offsets, a.word_ids
    len_a = len(ids_a)
    if b is not None:
      ids_b, off_b, wid_b = b.ids, b.offsets, b.word_ids
      len_b = len(ids_b)
    else:
      len_b = None
    num_truncated = 0
    if max_length is not None and truncation is not None:
      n_special = ((2 if b is None else 3) if add_special_tokens else 0)
      keep_a, keep_b = _truncated_lengths(len_a, len_b, max_length - n_special,
                                          truncation)
      num_truncated = len_a - keep_a
      if keep_a < len_a:
        ids_a, off_a, wid_a = ids_a[:keep_a], off_a[:keep_a], wid_a[:keep_a]
      if b is not None:
        num_truncated += len_b - keep_b
        if keep_b < len_b:
          ids_b, off_b, wid_b = ids_b[:keep_b], off_b[:keep_b], wid_b[:keep_b]
    n_a = len(ids_a)
    if add_special_tokens:
      ids = [self.cls_id] + ids_a + [self.sep_id]
      offsets = [(0, 0)] + off_a + [(0, 0)]
      word_ids = [None] + wid_a + [None]
      sequence_ids = [None] + [0] * n_a + [None]
      token_type_ids = [0] * (n_a + 2)
    else:
      ids, offsets, word_ids = ids_a, off_a, wid_a
      sequence_ids = [0] * n_a
      token_type_ids = [0] * n_a
    if b is not None:
      n_b = len(ids_b)
      if add_special_tokens:
        ids = ids + ids_b + [self.sep_id]
        offsets = offsets + off_b + [(0, 0)]
        word_ids = word_ids + wid_b + [None]
        sequence_ids = sequence_ids + [1] * n_b + [None]
        token_type_ids = token_type_ids + [1] * (n_b + 1)
      else:
        ids = ids + ids_b
        offsets = offsets + off_b
        word_ids = word_ids + wid_b
        sequence_ids = sequence_ids + [1] * n_b
        # Token types come with the [CLS] A [SEP] B [SEP] template; without
        # it transformers leaves them all 0, and so do we.
        token_type_ids = token_type_ids + [0] * n_b
    return Encoding(ids=ids, token_type_ids=token_type_ids,
                    attention_mask=[1] * len(ids), offsets=offsets,
                    word_ids=word_ids, sequence_ids=sequence_ids,
                    num_truncated=num_truncated)


def _check_text(text, name: str) -> None:
  if not isinstance(text, str):
    raise TypeError(f'{name} must be a str, got {type(text).__name__}')


def _check_words(words, name: str) -> None:
  # A bare string is a sequence of characters; almost certainly a mistake.
  if isinstance(words, str) or not isinstance(words, (list, tuple)):
    raise TypeError(f'{name} must be a list of str, got '
                    f'{type(words).__name__}')
  for i, w in enumerate(words):
    if not isinstance(w, str):
      raise TypeError(f'{name}[{i}] must be a str, got {type(w).__name__}')


def _check_batch(batch, name: str, check_item) -> list:
  if isinstance(batch, str):
    raise TypeError(f'{name} must be a sequence, not a single str')
  batch = list(batch)
  for i, item in enumerate(batch):
    check_item(item, f'{name}[{i}]')
  return batch


# --- files --------------------------------------------------------------------


def _write_vocab(path: pathlib.Path, tokens: Sequence[str]) -> None:
  for token in tokens:
    # A line break inside a token would shift every later id on reload.
    if '\n' in token or '\r' in token:
      raise ValueError(f'token {token!r} contains a line break')
  data = ''.join(t + '\n' for t in tokens).encode('utf-8')
  path.write_bytes(data)


def _write_bert_config(directory: pathlib.Path, *, do_lower_case: bool,
                       strip_accents: bool, tokenize_chinese_chars: bool,
                       model_max_length: Optional[int] = None) -> None:
  config = {
      'tokenizer_class': 'BertTokenizer',
      'do_lower_case': do_lower_case,
      'strip_accents': strip_accents,
      'tokenize_chinese_chars': tokenize_chinese_chars,
      'do_basic_tokenize': True,
  }
  config.update(_CONFIG_SPECIAL_KEYS)
  if model_max_length is not None:
    config['model_max_length'] = model_max_length
  (directory / _CONFIG_FILE).write_text(
      json.dumps(config, indent=2, sort_keys=True) + '\n', encoding='utf-8')


# --- corpora ------------------------------------------------------------------

TextSource = Union[Sequence[str], Sequence[os.PathLike], os.PathLike]


def load_sotu_texts() -> list[str]:
  """The 233 State of the Union speeches from the data registry, one text
  per speech, in file-name (year) order."""
  root = registry.fetch('sotu')
  texts = []
  for path in sorted(pathlib.Path(root).glob('*.json')):
    with open(path, encoding='utf-8') as f:
      texts.append(json.load(f)['text'])
  return texts


def corpus_files(
    paths: Iterable[Union[str, os.PathLike]]) -> list[pathlib.Path]:
  """Expands files and directories (every `*.txt` below, sorted) to files."""
  files = []
  for p in paths:
    p = pathlib.Path(p)
    if p.is_dir():
      found = sorted(q for q in p.rglob('*.txt') if q.is_file())
      if not found:
        raise ValueError(f'no *.txt files under {p}')
      files.extend(found)
    elif p.is_file():
      files.append(p)
    else:
      raise FileNotFoundError(f'corpus path not found: {p}')
  return files


class _Corpus:
  """A re-iterable stream of texts from strings and/or files.

  Training reads the corpus twice (alphabet, then merges), so one-shot
  iterators are materialised once and files are simply re-read.
  """

  def __init__(self, texts_or_files):
    if isinstance(texts_or_files, str):
      raise TypeError('texts_or_files must be a list of texts or paths, not a '
                      'single str (wrap a text in a list; pass a path as '
                      'pathlib.Path)')
    if isinstance(texts_or_files, os.PathLike):
      texts_or_files = [texts_or_files]
    items = list(texts_or_files)
    if not items:
      raise ValueError('texts_or_files is empty')
    # str items are texts, PathLike items are files/dirs; a mixture keeps
    # order (files expand in place).
    self._items = []
    for item in items:
      if isinstance(item, os.PathLike):
        self._items.extend(corpus_files([item]))
      elif isinstance(item, str):
        self._items.append(item)
      else:
        raise TypeError(f'corpus item must be str (a text) or a path, got '
                        f'{type(item).__name__}')

  def __iter__(self) -> Iterator[str]:
    for item in self._items:
      if isinstance(item, str):
        yield item
      else:
        with open(item, encoding='utf-8') as f:
          yield from f


def _word_counts(corpus: _Corpus, normalizer: normalizers.Normalizer,
                 tokenize_chinese_chars: bool) -> collections.Counter:
  """Counts the pre-tokenised words of the corpus, as `BertTokenizer` splits
  them (after the same normalisation)."""
  pattern = _python_word_pattern(tokenize_chinese_chars)
  word_counts = collections.Counter()
  for text in corpus:
    word_counts.update(pattern.findall(normalizer.normalize_str(text)))
  return word_counts


def _char_statistics(word_counts: collections.Counter):
  """Counts characters of the pre-tokenised words, as the trainer sees them.

  Returns:
    (char_counts, continuation_chars): how often each character occurs, and
    the characters that occur after the first position of some word (exactly
    the ones the trainer would give a `##` piece).
  """
  char_counts = collections.Counter()
  continuation = set()
  for word, count in word_counts.items():
    for c in word:
      char_counts[c] += count
    continuation.update(word[1:])
  return char_counts, continuation


def _kept_alphabet(char_counts: collections.Counter,
                   limit_alphabet: Optional[int]) -> list[str]:
  """The characters kept, sorted; most frequent first when limited (ties by
  code point, where the Rust trainer breaks them arbitrarily)."""
  chars = list(char_counts)
  if limit_alphabet is not None and len(chars) > limit_alphabet:
    chars.sort(key=lambda c: (-char_counts[c], c))
    chars = chars[:limit_alphabet]
  return sorted(chars)


def _check_vocab_size(vocab_size: int, min_frequency: int) -> None:
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or (
      vocab_size < len(SPECIAL_TOKENS)):
    raise ValueError(f'vocab_size must be an int >= {len(SPECIAL_TOKENS)}, '
                     f'got {vocab_size!r}')
  if min_frequency < 0:
    raise ValueError(f'min_frequency must be >= 0, got {min_frequency}')


def _initial_vocab(word_counts: collections.Counter,
                   limit_alphabet: Optional[int]) -> tuple[list[str], set]:
  """[PAD] [UNK] [CLS] [SEP] [MASK], the alphabet (sorted by code point), then
  its `##` pieces (sorted); and the set of kept characters."""
  char_counts, continuation = _char_statistics(word_counts)
  alphabet = _kept_alphabet(char_counts, limit_alphabet)
  kept = set(alphabet)
  pieces = sorted(CONTINUATION_PREFIX + c for c in continuation if c in kept)
  return list(SPECIAL_TOKENS) + alphabet + pieces, kept


def _save_trained(tokens: Sequence[str], out_dir: Union[str, os.PathLike], *,
                  lowercase: bool, strip_accents: bool,
                  tokenize_chinese_chars: bool) -> pathlib.Path:
  if tokens[:len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
    raise RuntimeError(f'special tokens not first: {tokens[:5]}')
  _validate_vocab(tokens, '<trained vocabulary>')
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  vocab_path = out_dir / _VOCAB_FILE
  _write_vocab(vocab_path, tokens)
  _write_bert_config(out_dir, do_lower_case=lowercase,
                     strip_accents=strip_accents,
                     tokenize_chinese_chars=tokenize_chinese_chars)
  return vocab_path


# --- training -----------------------------------------------------------------


def word_units(word: str) -> list[str]:
  """The initial WordPiece units of a word: its first character, then `##`
  plus each later character ('cab' -> ['c', '##a', '##b'])."""
  return [word[0]] + [CONTINUATION_PREFIX + c for c in word[1:]]


def merged_unit(left: str, right: str) -> str:
  """The unit that merging `left` with the continuation unit `right` makes
  ('a' + '##b' -> 'ab', '##a' + '##b' -> '##ab')."""
  return left + right[len(CONTINUATION_PREFIX):]


def merge_word(units: Sequence[str], pair: tuple[str, str]) -> list[str]:
  """Replaces each occurrence of `pair` in `units`, left to right and without
  overlap (['##a', '##a', '##a'] with ('##a', '##a') -> ['##aa', '##a'])."""
  left, right = pair
  out, i, n = [], 0, len(units)
  while i < n:
    if i + 1 < n and units[i] == left and units[i + 1] == right:
      out.append(merged_unit(left, right))
      i += 2
    else:
      out.append(units[i])
      i += 1
  return out


class LikelihoodMerger:
  """WordPiece merges by the likelihood criterion, with incremental counts.

  The corpus is a multiset of words, each segmented into units (initially
  `word_units`). With `c(u)` the number of occurrences of unit `u` and
  `c(x, y)` the number of adjacent occurrences of `x` then `y` (both
  weighted by word frequency), the next merge is the pair maximising

      score(x, y) = c(x, y) / (c(x) * c(y)),

  i.e. p(xy) / (p(x) p(y)) under a unigram model of the units, up to the
  corpus size that is the same for every pair: the merge whose unigram
  likelihood gain per occurrence is largest (Schuster & Nakajima 2012, as
  used for BERT's WordPiece). BPE (and `train_wordpiece_freq`) maximises
  `c(x, y)` instead. Pairs seen fewer than `min_frequency` times are never
  merged.

  Ties are broken by a fixed rule, so training is deterministic: higher
  score, then higher `c(x, y)`, then the smaller `(x, y)` in code-point order.
  Scores are compared as float64 quotients of exact integer counts, so equal
  ratios always tie exactly.

  Incremental: the pair counts, the unit counts, an index pair -> words that
  contain it and unit -> pairs that contain it are kept up to date. A merge of
  (x, y) re-segments only the words containing the pair; since it changes
  c(x), c(y) and c(xy), the pairs whose score can change are those whose
  count changed in those words plus those containing x, y or xy, and only
  they are re-scored. The best pair comes from a max-heap with lazy
  invalidation: an entry is used only if it still equals its pair's current
  key (a changed pair always gets a fresh entry).

  Attributes:
    words: current segmentation of each distinct word (list of unit lists),
      in sorted word order.
    freqs: how often each word occurs.
    unit_counts: c(u) for every unit occurring in `words`.
    pair_counts: c(x, y) for every adjacent pair occurring in `words`.
  """

  def __init__(self, word_counts: Mapping[str, int], *,
               min_frequency: int = 2):
    self.min_frequency = min_frequency
    self.words, self.freqs = [], []
    for word in sorted(word_counts):
      if word and word_counts[word] > 0:
        self.words.append(word_units(word))
        self.freqs.append(int(word_counts[word]))
    self.unit_counts = collections.Counter()
    self.pair_counts = collections.Counter()
    self._pair_words = collections.defaultdict(set)
    self._unit_pairs = collections.defaultdict(set)
    for wid, (units, freq) in enumerate(zip(self.words, self.freqs)):
      for u in units:
        self.unit_counts[u] += freq
      for pair in zip(units, units[1:]):
        self.pair_counts[pair] += freq
        self._pair_words[pair].add(wid)
    for pair in self.pair_counts:
      self._unit_pairs[pair[0]].add(pair)
      self._unit_pairs[pair[1]].add(pair)
    self._heap = []
    self._rebuild_heap()

  def score(self, pair: tuple[str, str]) -> float:
    """c(x, y) / (c(x) c(y)) for a pair present in the corpus."""
    return self.pair_counts[pair] / (
        self.unit_counts[pair[0]] * self.unit_counts[pair[1]])

  def _key(self, pair):
    # heapq is a min-heap: negate score and count; (x, y) ascending.
    return (-self.score(pair), -self.pair_counts[pair], pair[0], pair[1])

  def _rebuild_heap(self):
    self._heap = [self._key(p) for p, n in self.pair_counts.items()
                  if n >= max(self.min_frequency, 1)]
    heapq.heapify(self._heap)

  def best_pair(self) -> Optional[tuple[str, str]]:
    """The pair to merge next, or None when no pair is frequent enough."""
    heap = self._heap
    while heap:
      entry = heap[0]
      pair = (entry[2], entry[3])
      if pair in self.pair_counts and entry == self._key(pair):
        return pair
      heapq.heappop(heap)  # stale: its pair changed or is gone
    return None

  def merge(self, pair: tuple[str, str]) -> str:
    """Merges every occurrence of `pair`; returns the new unit."""
    if pair not in self.pair_counts:
      raise KeyError(f'pair {pair} does not occur in the corpus')
    new_unit = merged_unit(*pair)
    changed_pairs = set()
    for wid in sorted(self._pair_words[pair]):
      old, freq = self.words[wid], self.freqs[wid]
      new = merge_word(old, pair)
      self.words[wid] = new
      for u in old:
        self.unit_counts[u] -= freq
      for u in new:
        self.unit_counts[u] += freq
      old_pairs = collections.Counter(zip(old, old[1:]))
      new_pairs = collections.Counter(zip(new, new[1:]))
      for p in old_pairs.keys() | new_pairs.keys():
        if p not in new_pairs:
          self._pair_words[p].discard(wid)
        elif p not in old_pairs:
          self._pair_words[p].add(wid)
        delta = new_pairs[p] - old_pairs[p]
        if delta:
          self._add_pair_count(p, delta * freq)
          changed_pairs.add(p)
    for u in (pair[0], pair[1], new_unit):
      if self.unit_counts[u] == 0:
        del self.unit_counts[u]
      # Every pair containing a unit whose count changed has a new score.
      changed_pairs.update(self._unit_pairs.get(u, ()))
    # The hot loop: the key pushed must stay equal to `_key`.
    pair_counts, unit_counts = self.pair_counts, self.unit_counts
    heap = self._heap
    min_count = max(self.min_frequency, 1)
    for p in changed_pairs:
      n = pair_counts.get(p, 0)
      if n >= min_count:
        heapq.heappush(heap, (-n / (unit_counts[p[0]] * unit_counts[p[1]]),
                              -n, p[0], p[1]))
    if len(self._heap) > 4 * len(self.pair_counts) + 1024:
      self._rebuild_heap()  # drop the stale entries
    return new_unit

  def _add_pair_count(self, pair, delta):
    count = self.pair_counts[pair] + delta
    if count < 0:
      raise RuntimeError(f'pair count of {pair} went negative')
    if count:
      if pair not in self._unit_pairs[pair[0]]:
        self._unit_pairs[pair[0]].add(pair)
        self._unit_pairs[pair[1]].add(pair)
      self.pair_counts[pair] = count
    else:
      del self.pair_counts[pair]
      self._pair_words.pop(pair, None)
      self._unit_pairs[pair[0]].discard(pair)
      self._unit_pairs[pair[1]].discard(pair)


def train_wordpiece(texts_or_files: TextSource, vocab_size: int, *,
                    min_frequency: int = 2, lowercase: bool = True,
                    strip_accents: Optional[bool] = None,
                    tokenize_chinese_chars: bool = True,
                    limit_alphabet: Optional[int] = None,
                    out_dir: Union[str, os.PathLike]) -> pathlib.Path:
  """Trains a BERT WordPiece vocabulary by the likelihood criterion.

  Merges the pair (x, y) with the highest c(xy) / (c(x) c(y)) (Schuster &
  Nakajima 2012; see `LikelihoodMerger` for the formula, the tie rule and the
  incremental updates); pure Python, deterministic. `train_wordpiece_freq`
  merges the most frequent pair instead (BPE with `##` prefixes).

  Text goes through the same normalisation and pre-tokenisation as
  `BertTokenizer` (control characters removed, NFC, lower-casing and accent
  stripping if asked, whitespace and punctuation split, CJK ideographs as
  one-character words), so the vocabulary matches how it will be applied.
  The vocabulary is [PAD] [UNK] [CLS] [SEP] [MASK], then the alphabet
  (sorted by code point), then its `##` pieces (sorted), then the new units
  in merge order (a merge that rebuilds an existing unit adds nothing).

  Args:
    texts_or_files: texts (`str` items) and/or paths (`pathlib.Path` items;
      a directory means every `*.txt` below it); files are read line by line.
    vocab_size: target size, special tokens and alphabet included. A larger
      alphabet than this leaves the vocabulary larger, with no merges; the
      vocabulary is smaller when no pair is left with `min_frequency`.
    min_frequency: a pair seen fewer times is never merged.
    lowercase: lower-case (the `do_lower_case` of the result).
    strip_accents: None follows `lowercase`.
    tokenize_chinese_chars: split CJK ideographs into single characters.
    limit_alphabet: keep only this many most frequent characters. Words with
      another character are left out of the merge counts: `BertTokenizer`
      maps such a word to [UNK] whatever the merges.
    out_dir: created if needed; receives `vocab.txt` and
      `tokenizer_config.json` (so `BertTokenizer.from_pretrained_dir` and
      `transformers.BertTokenizer.from_pretrained` load it as trained).

  Returns:
    Path of the written `vocab.txt`.
  """
  _check_vocab_size(vocab_size, min_frequency)
  corpus = _Corpus(texts_or_files)
  strip = _resolve_strip_accents(lowercase, strip_accents)
  normalizer, _ = _bert_pipeline(lowercase, strip, tokenize_chinese_chars)
  word_counts = _word_counts(corpus, normalizer, tokenize_chinese_chars)
  tokens, kept = _initial_vocab(word_counts, limit_alphabet)
  if limit_alphabet is not None:
    word_counts = {w: n for w, n in word_counts.items() if kept.issuperset(w)}
  merger = LikelihoodMerger(word_counts, min_frequency=min_frequency)
  seen = set(tokens)
  while len(tokens) < vocab_size:
    pair = merger.best_pair()
    if pair is None:
      break
    unit = merger.merge(pair)
    if unit not in seen:
      seen.add(unit)
      tokens.append(unit)
  return _save_trained(tokens, out_dir, lowercase=lowercase,
                       strip_accents=strip,
                       tokenize_chinese_chars=tokenize_chinese_chars)


def train_wordpiece_freq(texts_or_files: TextSource, vocab_size: int, *,
                         min_frequency: int = 2, lowercase: bool = True,
                         strip_accents: Optional[bool] = None,
                         tokenize_chinese_chars: bool = True,
                         limit_alphabet: Optional[int] = None,
                         out_dir: Union[str, os.PathLike]) -> pathlib.Path:
  """Trains a BERT WordPiece vocabulary by frequency; deterministic.

  The merge rule is BPE's: the most frequent adjacent pair is merged (the
  `tokenizers` WordPiece trainer, in Rust), and the pieces carry `##`
  prefixes. `train_wordpiece` uses WordPiece's likelihood criterion instead.
  Normalisation, pre-tokenisation and the vocabulary layout are those of
  `train_wordpiece`: [PAD] [UNK] [CLS] [SEP] [MASK], the alphabet (sorted by
  code point), its `##` pieces (sorted), then learned pieces in merge order.

  Args:
    texts_or_files: as for `train_wordpiece`.
    vocab_size: as for `train_wordpiece`.
    min_frequency: a pair seen fewer times is never merged.
    lowercase: lower-case (the `do_lower_case` of the result).
    strip_accents: None follows `lowercase`.
    tokenize_chinese_chars: split CJK ideographs into single characters.
    limit_alphabet: keep only this many most frequent characters; others
      are dropped from the words they occur in (as the Rust trainer does).
    out_dir: as for `train_wordpiece`.

  Returns:
    Path of the written `vocab.txt`.
  """
  _check_vocab_size(vocab_size, min_frequency)
  corpus = _Corpus(texts_or_files)
  strip = _resolve_strip_accents(lowercase, strip_accents)
  tokenizer = tokenizers.Tokenizer(models.WordPiece(
      unk_token=UNK, continuing_subword_prefix=CONTINUATION_PREFIX))
  tokenizer.normalizer, tokenizer.pre_tokenizer = _bert_pipeline(
      lowercase, strip, tokenize_chinese_chars)

  seed, _ = _initial_vocab(
      _word_counts(corpus, tokenizer.normalizer, tokenize_chinese_chars),
      limit_alphabet)
  # Seeding the alphabet and the ## pieces as "special tokens" fixes their
  # ids before merging (otherwise the ## pieces get hash-map-order ids, which
  # decide ties between equally frequent merges), and
  # limit_alphabet=0 stops the trainer adding characters of its own. The
  # seeded tokens never reach the tokenizer that encodes: only the vocabulary
  # is kept.
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
      special_tokens=seed, limit_alphabet=0,
      continuing_subword_prefix=CONTINUATION_PREFIX)
  tokenizer.train_from_iterator(corpus, trainer=trainer)

  vocab = tokenizer.get_vocab(with_added_tokens=False)
  tokens = sorted(vocab, key=vocab.get)
  if [vocab[t] for t in tokens] != list(range(len(tokens))):
    raise RuntimeError('trained vocabulary ids are not contiguous')
  return _save_trained(tokens, out_dir, lowercase=lowercase,
                       strip_accents=strip,
                       tokenize_chinese_chars=tokenize_chinese_chars)


def _bpe_tokenizer(bpe: models.BPE, lowercase: bool) -> tokenizers.Tokenizer:
  """Byte-level BPE pipeline: NFC (+ lower-case), GPT-2 style byte mapping."""
  tokenizer = tokenizers.Tokenizer(bpe)
  steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
  tokenizer.normalizer = normalizers.Sequence(steps)
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  return tokenizer


def train_bpe(texts_or_files: TextSource, vocab_size: int, *,
              min_frequency: int = 2, lowercase: bool = False,
              out_dir: Union[str, os.PathLike]) -> tokenizers.Tokenizer:
  """Trains a byte-level BPE vocabulary (GPT-2/RoBERTa style); deterministic.

  Byte-level: text is NFC-normalised (and lower-cased if asked), split with
  the GPT-2 regex, and each UTF-8 byte is mapped to a printable character, so
  every input is representable (no `[UNK]`) and decoding restores the
  normalised text exactly. No prefix space is added, so a word at the start of
  a text is tokenised differently from the same word after a space (GPT-2
  behaviour). The five BERT special tokens take ids 0-4, then the 256 byte
  symbols, then merges.

  Args:
    texts_or_files: as for `train_wordpiece`.
    vocab_size: target size including the 5 special and 256 byte tokens.
    min_frequency: a pair seen fewer times is never merged.
    lowercase: lower-case before splitting.
    out_dir: receives `vocab.json`, `merges.txt` and `tokenizer.json`.

  Returns:
    A `tokenizers.Tokenizer` rebuilt from the written files. `encode` adds
    `[CLS] ... [SEP]` (pass `add_special_tokens=False` to skip them).
  """
  _check_vocab_size(vocab_size, min_frequency)
  corpus = _Corpus(texts_or_files)
  tokenizer = _bpe_tokenizer(models.BPE(), lowercase)
  # All 256 byte symbols are forced into the alphabet, which the trainer
  # numbers in code-point order; with no subword prefix nothing else is
  # created during word splitting, so ids (and merge tie-breaks) are fixed.
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
      special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(corpus, trainer=trainer)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tokenizer.model.save(str(out_dir))
  return load_bpe(out_dir, lowercase=lowercase)


def load_bpe(directory: Union[str, os.PathLike], *,
             lowercase: Optional[bool] = None) -> tokenizers.Tokenizer:
  """Loads a `train_bpe` output (`vocab.json` + `merges.txt`).

  `lowercase` defaults to what `tokenizer.json` in the directory records;
  the returned tokenizer is re-saved there so both stay in step.
  """
  directory = pathlib.Path(directory)
  vocab_path, merges_path = directory / 'vocab.json', directory / 'merges.txt'
  for p in (vocab_path, merges_path):
    if not p.is_file():
      raise FileNotFoundError(f'BPE file not found: {p}')
  json_path = directory / 'tokenizer.json'
  if lowercase is None:
    lowercase = False
    if json_path.is_file():
      saved = json.loads(json_path.read_text(encoding='utf-8'))
      steps = (saved.get('normalizer') or {}).get('normalizers') or []
      lowercase = any(s.get('type') == 'Lowercase' for s in steps)
  bpe = models.BPE.from_file(str(vocab_path), str(merges_path))
  tokenizer = _bpe_tokenizer(bpe, lowercase)
  specials = {}
  for t in SPECIAL_TOKENS:
    token_id = tokenizer.token_to_id(t)
    if token_id is None:
      raise ValueError(f'{vocab_path}: missing special token {t}')
    specials[t] = token_id
  tokenizer.add_special_tokens([
      tokenizers.AddedToken(t, special=True, normalized=False)
      for t in SPECIAL_TOKENS])
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f'{CLS} $A {SEP}', pair=f'{CLS} $A {SEP} $B:1 {SEP}:1',
      special_tokens=[(CLS, specials[CLS]), (SEP, specials[SEP])])
  tokenizer.save(str(json_path))
  return tokenizer


# --- command line -------------------------------------------------------------


def _corpus_from_flag(value: str):
  if value == 'sotu':
    return load_sotu_texts()
  if value in ('bbc', 'msra'):
    # The registry corpora of `corpora.load_documents`, one text a sentence.
    return [s for doc in corpora.load_documents(value) for s in doc]
  return corpus_files(p for p in value.split(',') if p)


# Vocabulary kinds of the command line.
KINDS = ('wordpiece', 'wordpiece_freq', 'bpe')


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m bert_jax.tokenization',
      description='Train a WordPiece (likelihood or frequency merges) or '
                  'byte-level BPE vocabulary.')
  sub = parser.add_subparsers(dest='command', required=True)
  train = sub.add_parser('train', help='train a vocabulary')
  train.add_argument('--corpus', required=True,
                     help="'sotu' (registry speeches), 'bbc' or 'msra' "
                          '(registry corpora, see bert_jax/data/corpora.py), '
                          'or comma-separated text files / directories '
                          '(every *.txt below)')
  train.add_argument('--vocab_size', type=int, default=8000)
  train.add_argument('--kind', choices=KINDS, default='wordpiece',
                     help='wordpiece: likelihood merges (BERT); '
                          'wordpiece_freq: frequency merges (BPE with ## '
                          'pieces); bpe: byte-level BPE')
  train.add_argument('--out', required=True, help='output directory')
  train.add_argument('--min_frequency', type=int, default=2)
  case = train.add_mutually_exclusive_group()
  case.add_argument('--lowercase', dest='lowercase', action='store_true',
                    default=None, help='lower-case (default for wordpiece)')
  case.add_argument('--cased', dest='lowercase', action='store_false',
                    help='keep case (default for bpe)')
  args = parser.parse_args(argv)

  try:
    corpus = _corpus_from_flag(args.corpus)
  except (FileNotFoundError, ValueError) as e:
    parser.error(str(e))
  start = time.perf_counter()
  if args.kind in ('wordpiece', 'wordpiece_freq'):
    lowercase = True if args.lowercase is None else args.lowercase
    train = (train_wordpiece if args.kind == 'wordpiece'
             else train_wordpiece_freq)
    vocab_path = train(corpus, args.vocab_size,
                       min_frequency=args.min_frequency,
                       lowercase=lowercase, out_dir=args.out)
    size = len(read_vocab(vocab_path))
  else:
    lowercase = False if args.lowercase is None else args.lowercase
    tok = train_bpe(corpus, args.vocab_size, min_frequency=args.min_frequency,
                    lowercase=lowercase, out_dir=args.out)
    size = tok.get_vocab_size(with_added_tokens=True)
  seconds = time.perf_counter() - start
  print(f'trained {args.kind} vocab of {size} tokens in {seconds:.1f} s '
        f'-> {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
