"""Corpus readers for pretraining: documents as lists of sentence strings.

`load_documents(spec)` yields one document at a time as a `list[str]` of
sentences (the unit BERT's next-sentence task works on). Specs:

  'sotu'            233 US State of the Union addresses (registry 'sotu'),
                    one document per speech, in file-name (year) order.
  'bbc'             2,225 BBC news articles (registry 'bbc'), one document per
                    `<topic>/NNN.txt`, sorted by path; the title line is the
                    first sentence. One file of the packaged copy
                    (`sports/199.txt`) is Windows-1252, so this spec decodes
                    with `fallback_encoding='cp1252'` (counted in the stats).
  'msra'            MSRA NER training set (registry 'chinese_ner',
                    `msra_train.txt`, 50,289 sentences, one `char TAG` per
                    line): each sentence is its characters joined; the
                    corpus has no document boundaries, so every
                    `MSRA_SENTENCES_PER_DOCUMENT` (10) consecutive sentences
                    form one document (5,029 documents; the last is short).
  'tfds:<name>'     a TFDS text dataset such as 'tfds:wikipedia/20230601.en'
                    that is already prepared under `tfds_data_dir` (or
                    $TFDS_DATA_DIR); nothing is downloaded. Each record's
                    'text' feature is one document. An unprepared dataset is
                    a `CorpusNotPreparedError` that says how to prepare it.
  anything else     a directory (every `*.txt` below it, recursively), a glob
                    pattern, or a single file, read as UTF-8 in sorted path
                    order, with `layout` deciding where documents end:
                      'bert' (default, the original BERT input format):
                        documents are separated by one or more blank lines,
                        so one file may hold many documents; each non-blank
                        line is a sentence or a paragraph.
                      'file': each file is one document; blank lines are
                        just paragraph breaks.

Every non-blank line (paragraph) is passed through `split_sentences`, so
files with one sentence per line and files with one paragraph per line both
work.

Sharding: documents are numbered 0, 1, 2, ... in the order above, counting
every candidate document (before empty ones are dropped, so the numbering
does not depend on contents), and host `shard_index` of `num_shards` keeps
those with `number % num_shards == shard_index`. The shards are disjoint and
their union is the whole corpus. For one-document-per-file sources ('sotu',
'bbc', layout='file', 'tfds:') a host never opens the other hosts' files;
for 'bert'-layout files and 'msra' every host scans the (cheap) line
structure but splits only its own documents into sentences.

Empty documents (no sentence after stripping) are skipped and counted in
`LoadStats`; bytes that are not valid UTF-8 are a `CorpusDecodeError` naming
the file (unless a `fallback_encoding` is given).
"""

from __future__ import annotations

import dataclasses
import glob as glob_lib
import json
import os
import pathlib
import re
from typing import Iterable, Iterator

MSRA_SENTENCES_PER_DOCUMENT = 10


class CorpusDecodeError(ValueError):
  """A corpus file is not valid text in the expected encoding."""


class CorpusNotPreparedError(FileNotFoundError):
  """A TFDS corpus is not prepared on local/user storage."""


@dataclasses.dataclass
class LoadStats:
  """Counters filled in by `load_documents` (pass one in to read them).

  Counts cover this shard only: `documents` yielded, `sentences` in them,
  `skipped_empty` candidate documents (or files) of this shard that held no
  sentence, and `fallback_decoded` files that needed `fallback_encoding`.
  """
  documents: int = 0
  sentences: int = 0
  skipped_empty: int = 0
  fallback_decoded: int = 0


# --------------------------------------------------------------------------
# Sentence splitting.
# --------------------------------------------------------------------------

# Abbreviations after which a period never ends a sentence: titles and the
# like, which are followed by a (capitalised) name.
_TITLE_ABBREVIATIONS = frozenset("""
    mr mrs ms messrs mme mlle dr prof rev hon st sr jr gen col lt maj sgt capt
    cmdr adm gov sen rep pres supt insp det fr ft mt cf vs v fig figs op vol
    pp ch sec art no nos dept approx est
""".split())
# Abbreviations that can also end a sentence ("... and Smith Inc. The ...").
# After these (and after dotted acronyms such as "U.S."), a period ends the
# sentence only when the next word is a common sentence opener.
_OTHER_ABBREVIATIONS = frozenset("""
    etc inc ltd co corp bros jan feb mar apr jun jul aug sep sept oct nov dec
    mon tue tues wed thu thur thurs fri sat sun
""".split())
# Capitalised words that usually start a sentence rather than continue a
# name; used to resolve "U.S. The" (boundary) vs "U.S. Army" (not).
_SENTENCE_OPENERS = frozenset("""
    the a an this that these those it its we i you he she they there here
    but and or so yet for nor if when while although though because since
    as at in on by from to with after before during until in our my his her
    their your what which who whom whose why how where let however moreover
    thus therefore then now today yesterday tomorrow also such some many
    most all no not every each both few one two three last next first
""".split())

_CLOSERS = '"\'”’)]}»」』）】〕'
_OPENERS = '"\'“‘([{«「『（【〔'
# A run of terminators, optionally followed by closing quotes/brackets.
_CANDIDATE = re.compile(r'(?:\.{3}|…+|[.!?]+|[。！？!?]+)[' + re.escape(_CLOSERS)
                        + r']*')
_CJK_TERMINATORS = frozenset('。！？…')


def _is_cjk(ch: str) -> bool:
  cp = ord(ch)
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
          or 0x20000 <= cp <= 0x2FA1F or 0xF900 <= cp <= 0xFAFF
          or 0x3000 <= cp <= 0x303F or 0xFF00 <= cp <= 0xFFEF)


def _next_word(text: str, pos: int) -> str:
  """The whitespace-delimited word starting at or after `pos`, openers off."""
  m = re.compile(r'\s*(\S*)').match(text, pos)
  return m.group(1).lstrip(_OPENERS) if m else ''


def _previous_word(text: str, pos: int) -> str:
  """The whitespace-delimited word ending just before `pos`, openers off."""
  start = pos
  while start > 0 and not text[start - 1].isspace():
    start -= 1
  return text[start:pos].lstrip(_OPENERS)


def _is_boundary(text: str, match: re.Match) -> bool:
  """Whether the terminator run `match` in `text` ends a sentence."""
  end = match.end()
  terminators = match.group(0).rstrip(_CLOSERS)
  if end >= len(text):
    return True
  following = text[end]
  if any(c in _CJK_TERMINATORS for c in terminators):
    return True  # Chinese needs no space after 。！？.
  if not following.isspace():
    # "3.5", "U.S.", "a?b": not a boundary -- except ASCII '!'/'?' directly
    # followed by Chinese text, which is written without spaces.
    return _is_cjk(following) and terminators != '.'
  word = _next_word(text, end)
  if not word:
    return True
  first = word[0]
  if first.islower():
    return False  # "e.g. the", '"Why?" he asked', "a.m. tomorrow".
  if terminators != '.':
    return True  # "!", "?", "...", "?!": a boundary unless lowercase follows.
  prev = _previous_word(text, match.start())
  bare = prev.lower()
  if bare in _TITLE_ABBREVIATIONS:
    # "No. 5" is an abbreviation, "I said no. The ..." is a sentence end.
    if bare in ('no', 'nos', 'art', 'sec', 'est', 'op', 'v'):
      return not first.isdigit() and word.lower().rstrip('.,;:') in (
          _SENTENCE_OPENERS)
    return False
  if len(prev) == 1 and prev.isalpha():
    return False  # An initial: "John F. Kennedy".
  if '.' in prev or bare in _OTHER_ABBREVIATIONS:
    # Dotted acronyms ("U.S.", "D.C.") and "etc.", "Inc.": a boundary only
    # before a typical sentence opener.
    return word.lower().rstrip('.,;:') in _SENTENCE_OPENERS
  return True


def split_sentences(text: str) -> list[str]:
  """Splits text into sentences; deterministic and rule based.

  Newlines always end a sentence (they separate paragraphs in our corpora).
  Within a paragraph, a sentence ends after '.', '!', '?', '...' or '…'
  (plus any closing quotes/brackets) followed by whitespace and a word that
  does not start in lowercase -- except after titles ("Mr.", "Dr.", "St."),
  initials ("F."), "No." before a number, and, unless the next word is a
  common sentence opener such as "The", dotted acronyms ("U.S.", "D.C.") and
  "etc."/"Inc.". Decimals ("3.5") never split (no space). Chinese '。！？…'
  end a sentence with or without a following space.

  Args:
    text: any text.

  Returns:
    Stripped, non-empty sentences in order.
  """
  sentences = []
  for paragraph in text.splitlines():
    start = 0
    for match in _CANDIDATE.finditer(paragraph):
      if _is_boundary(paragraph, match):
        piece = paragraph[start:match.end()].strip()
        if piece:
          sentences.append(piece)
        start = match.end()
    piece = paragraph[start:].strip()
    if piece:
      sentences.append(piece)
  return sentences


# --------------------------------------------------------------------------
# Readers.
# --------------------------------------------------------------------------


def _read_text(path: pathlib.Path, fallback_encoding: str | None,
               stats: LoadStats) -> str:
  data = path.read_bytes()
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    if fallback_encoding is None:
      raise CorpusDecodeError(
          f'{path}: not valid UTF-8 ({e.reason} at byte {e.start}); fix the '
          f'file or pass fallback_encoding=') from e
    try:
      text = data.decode(fallback_encoding)
    except UnicodeDecodeError as e2:
      raise CorpusDecodeError(
          f'{path}: neither UTF-8 nor {fallback_encoding} ({e2.reason} at '
          f'byte {e2.start})') from e2
    stats.fallback_decoded += 1
    return text


def _mine(index: int, shard_index: int, num_shards: int) -> bool:
  return index % num_shards == shard_index


def _emit(sentences: list[str], stats: LoadStats) -> Iterator[list[str]]:
  if sentences:
    stats.documents += 1
    stats.sentences += len(sentences)
    yield sentences
  else:
    stats.skipped_empty += 1


def _files_as_documents(paths: list[pathlib.Path], shard_index: int,
                        num_shards: int, fallback_encoding: str | None,
                        stats: LoadStats) -> Iterator[list[str]]:
  for i, path in enumerate(paths):
    if _mine(i, shard_index, num_shards):
      text = _read_text(path, fallback_encoding, stats)
      yield from _emit(split_sentences(text), stats)


def _blank_line_documents(paths: list[pathlib.Path], shard_index: int,
                          num_shards: int, fallback_encoding: str | None,
                          stats: LoadStats) -> Iterator[list[str]]:
  index = 0
  for path in paths:
    text = _read_text(path, fallback_encoding, stats)
    lines: list[str] = []
    # A trailing '' closes the file's last document: documents never span
    # files.
    for line in text.splitlines() + ['']:
      if line.strip():
        lines.append(line)
        continue
      if not lines:
        continue
      if _mine(index, shard_index, num_shards):
        yield from _emit(split_sentences('\n'.join(lines)), stats)
      index += 1
      lines = []
    if not text.strip():
      # A file with nothing in it is one (empty) candidate document, so that
      # a stray empty file is counted rather than silently ignored.
      if _mine(index, shard_index, num_shards):
        stats.skipped_empty += 1
      index += 1


def _sotu(shard_index, num_shards, stats) -> Iterator[list[str]]:
  from bert_jax.data import registry
  paths = sorted(pathlib.Path(registry.fetch('sotu')).glob('*.json'))
  for i, path in enumerate(paths):
    if not _mine(i, shard_index, num_shards):
      continue
    try:
      record = json.loads(path.read_bytes().decode('utf-8'))
    except UnicodeDecodeError as e:
      raise CorpusDecodeError(f'{path}: not valid UTF-8 ({e.reason})') from e
    yield from _emit(split_sentences(record.get('text') or ''), stats)


def _msra(shard_index, num_shards, stats) -> Iterator[list[str]]:
  from bert_jax.data import registry
  path = pathlib.Path(registry.fetch('chinese_ner')) / 'msra_train.txt'
  text = _read_text(path, None, stats)
  document: list[str] = []
  chars: list[str] = []
  index = 0
  for line in text.splitlines() + ['']:
    parts = line.split()
    if parts:
      chars.append(parts[0])  # `char TAG`; the tag is not needed here.
      continue
    if chars:
      document.append(''.join(chars))
      chars = []
    if len(document) == MSRA_SENTENCES_PER_DOCUMENT:
      if _mine(index, shard_index, num_shards):
        yield from _emit(document, stats)
      index += 1
      document = []
  if document:
    if _mine(index, shard_index, num_shards):
      yield from _emit(document, stats)


def _tfds(name: str, shard_index: int, num_shards: int,
          data_dir: str | None, split: str,
          stats: LoadStats) -> Iterator[list[str]]:
  data_dir = data_dir or os.environ.get('TFDS_DATA_DIR')
  how = (f"Prepare it first where TensorFlow and network access are "
         f"available, e.g. `tfds build {name.split('/')[0]} "
         f"--config={name.split('/')[1] if '/' in name else '...'} "
         f"--data_dir=DIR --file_format=array_record`, then pass "
         f"tfds_data_dir=DIR or set TFDS_DATA_DIR.")
  if not data_dir:
    raise CorpusNotPreparedError(
        f"tfds:{name}: no TFDS data_dir given (tfds_data_dir= or "
        f"$TFDS_DATA_DIR); this reader never downloads. {how}")
  root = pathlib.Path(data_dir).expanduser() / name
  if not any(root.glob('**/dataset_info.json')):
    raise CorpusNotPreparedError(
        f'tfds:{name}: not prepared under {data_dir} (no '
        f'{root}/<version>/dataset_info.json). {how}')
  import tensorflow_datasets as tfds  # Heavy; only for this spec.
  try:
    # Random access without TensorFlow; needs the array_record file format.
    source = tfds.data_source(name, split=split, data_dir=data_dir,
                              download=False)
    records: Iterable = (source[i] for i in range(shard_index, len(source),
                                                  num_shards))
    offset, stride = 0, 1
  except Exception:  # pylint: disable=broad-except
    # tfrecord-prepared datasets need TensorFlow's reader.
    dataset = tfds.load(name, split=split, data_dir=data_dir,
                        download=False)
    records = tfds.as_numpy(dataset)
    offset, stride = shard_index, num_shards
  for i, record in enumerate(records):
    if i % stride != offset:
      continue
    text = record['text']
    if isinstance(text, bytes):
      try:
        text = text.decode('utf-8')
      except UnicodeDecodeError as e:
        raise CorpusDecodeError(f'tfds:{name} record {i}: not UTF-8') from e
    yield from _emit(split_sentences(text), stats)


def _resolve_paths(spec: str) -> list[pathlib.Path]:
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    paths = [p for p in path.rglob('*.txt') if p.is_file()]
  elif path.is_file():
    paths = [path]
  else:
    paths = [pathlib.Path(p) for p in glob_lib.glob(os.path.expanduser(spec),
                                                   recursive=True)]
    paths = [p for p in paths if p.is_file()]
  if not paths:
    raise FileNotFoundError(f'no corpus files match {spec!r}')
  return sorted(paths)


def load_documents(spec: str, *, shard_index: int = 0, num_shards: int = 1,
                   layout: str = 'bert', fallback_encoding: str | None = None,
                   tfds_data_dir: str | None = None, tfds_split: str = 'train',
                   stats: LoadStats | None = None) -> Iterator[list[str]]:
  """Yields this shard's documents as lists of sentence strings.

  See the module docstring for the specs, the file layouts and the sharding
  rule.

  Args:
    spec: 'sotu', 'bbc', 'msra', 'tfds:<name>', or a directory, glob or file.
    shard_index: which shard (host) to read, in [0, num_shards).
    num_shards: number of shards (hosts).
    layout: for path specs, 'bert' (blank lines separate documents) or
      'file' (one document per file).
    fallback_encoding: for path specs, an encoding to try when a file is not
      UTF-8 (None: such a file is an error). 'bbc' uses 'cp1252'.
    tfds_data_dir: where a 'tfds:' corpus is prepared (else $TFDS_DATA_DIR).
    tfds_split: the TFDS split to read.
    stats: a `LoadStats` to fill in.

  Yields:
    Non-empty `list[str]` of non-empty sentences.
  """
  if not 0 <= shard_index < num_shards:
    raise ValueError(f'shard_index {shard_index} not in [0, {num_shards})')
  if layout not in ('bert', 'file'):
    raise ValueError(f"layout must be 'bert' or 'file', not {layout!r}")
  stats = stats if stats is not None else LoadStats()
  if spec == 'sotu':
    yield from _sotu(shard_index, num_shards, stats)
  elif spec == 'bbc':
    from bert_jax.data import registry
    root = pathlib.Path(registry.fetch('bbc'))
    paths = sorted(p for p in root.glob('*/*.txt') if p.is_file())
    yield from _files_as_documents(paths, shard_index, num_shards,
                                   fallback_encoding or 'cp1252', stats)
  elif spec == 'msra':
    yield from _msra(shard_index, num_shards, stats)
  elif spec.startswith('tfds:'):
    yield from _tfds(spec[len('tfds:'):], shard_index, num_shards,
                     tfds_data_dir, tfds_split, stats)
  else:
    paths = _resolve_paths(spec)
    reader = (_blank_line_documents if layout == 'bert'
              else _files_as_documents)
    yield from reader(paths, shard_index, num_shards, fallback_encoding,
                      stats)
