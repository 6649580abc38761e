"""CHAT transcripts (CHILDES / TalkBank `.cha`), as HKCanCor ships them:
`*SPK:\\t` word tier with words separated by spaces, `%mor:\\t` tier
with one `pos|jyutping` item per word (punctuation bare), tab-indented
continuation lines.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport)
from bert_jax.data.readers.lines import iter_lines, read_bytes, source_name


CHAT_TAGS = ('segmentation', 'pos')


def read_chat(
    path: PathLike, *,
    data: Optional[bytes] = None,
    tags: str = 'segmentation',
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.TaggingExample], ReadReport]:
  """Reads the utterances of a CHAT file as tagging examples.

  Args:
    tags: 'segmentation': the words are split into characters, tagged with
      bare B/M/E/S (the word tier's spaces are the gold segmentation);
      'pos': the words with the part of speech of their `%mor` item (the
      text before '|'; a bare item, i.e. punctuation, is its own tag).
    Others as for `read_conll`.

  Each utterance is a record, guid `<file>:<line of its * line>`. An
  utterance whose `%mor` tier (needed for 'pos') is missing or has another
  number of items than it has words is a `DataError` naming that line.
  """
  if tags not in CHAT_TAGS:
    raise ValueError(f'read_chat: tags={tags!r}; choices: {CHAT_TAGS}')
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  stem = os.path.basename(source)
  utterances = []   # [line, words text, mor text or None, decode error]
  tier = None
  for line in iter_lines(raw, encoding, notes=col.report.notes,
                         keepends=False):
    text = line.text.rstrip('\r')
    if text.startswith('*'):
      utterances.append([line.number, text.partition('\t')[2], None,
                         line.error])
      tier = 1
    elif text.startswith('%mor:') and utterances and tier is not None:
      utterances[-1][2] = text.partition('\t')[2]
      tier = 2
    elif text.startswith('\t') and tier is not None:
      utterances[-1][tier] += ' ' + text.strip()
      utterances[-1][3] = utterances[-1][3] or line.error
    else:
      tier = None   # headers (@) and other dependent tiers (%xxx)
  for number, words_text, mor, error in utterances:
    if col.full:
      break
    try:
      if error:
        raise DataError(source, number, None, f'invalid {encoding}: {error}',
                        reason='undecodable line')
      words = words_text.split()
      if not words:
        raise DataError(source, number, 'words', 'empty utterance',
                        reason='empty utterance')
      if tags == 'segmentation':
        chars, bmes = [], []
        for w in words:
          chars.extend(w)
          bmes.extend(['S'] if len(w) == 1 else
                      ['B'] + ['M'] * (len(w) - 2) + ['E'])
        tag_list = [col.label(t, number, 'words') for t in bmes]
        words = chars
      else:
        items = (mor or '').split()
        if len(items) != len(words):
          raise DataError(source, number, '%mor',
                          f'{len(items)} %mor items for {len(words)} words',
                          reason="field '%mor': item count")
        tag_list = [col.label(item.partition('|')[0] if '|' in item
                              else item, number, '%mor') for item in items]
      col.add(ex.TaggingExample(f'{stem}:{number}', words, tag_list))
    except DataError as e:
      col.fail(e)
  return col.finish()
