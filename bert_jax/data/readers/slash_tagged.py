"""One tagged sentence per line: `word/TAG word/TAG ...` (the Penn Treebank
"tagged" text format; Brown and pattern's test corpora use it too).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport)
from bert_jax.data.readers.lines import (encoding_error, iter_lines, read_bytes,
                                         source_name)


def read_slash_tagged(
    path: PathLike, *,
    data: Optional[bytes] = None,
    separator: str = '/',
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.TaggingExample], ReadReport]:
  """Reads one sentence per line as space-separated `word<separator>TAG`.

  The tag is what follows the LAST separator of a token, so words may
  contain it; the Penn Treebank's escaped slash `\\/` in a word becomes '/'.
  Blank lines are skipped. Each line is a record (guid `<file>:<line>`); a
  token without a separator, or with an empty word or tag, is a `DataError`
  naming the line and the token.
  """
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  stem = os.path.basename(source)
  for line in iter_lines(raw, encoding, notes=col.report.notes,
                         keepends=False):
    if not line.text.strip():
      continue
    if col.full:
      break
    try:
      if line.error:
        raise encoding_error(source, line)
      words, tags = [], []
      for k, token in enumerate(line.text.split(), 1):
        word, sep, tag = token.rpartition(separator)
        if not sep or not word or not tag:
          raise DataError(source, line.number, f'token {k}',
                          f'{token!r} is not word{separator}TAG',
                          reason='token is not word/TAG')
        words.append(word.replace('\\' + separator, separator))
        tags.append(col.label(tag, line.number, f'token {k}'))
      col.add(ex.TaggingExample(f'{stem}:{line.number}', words, tags))
    except DataError as e:
      col.fail(e)
  return col.finish()
