"""Directories of text files (one document per file, label = folder)."""

from __future__ import annotations

import pathlib
from typing import Callable, Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport, check_text)
from bert_jax.data.readers.lines import encoding_error, iter_lines, read_bytes


def read_text_dir(
    root: PathLike, *,
    pattern: str = '*.txt',
    labels: Optional[Sequence[str]] = None,
    fallback_encoding: Optional[str] = None,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.ClassificationExample], ReadReport]:
  """Reads `root/<label>/<file>` documents, one example per file.

  Files are read in sorted order; the guid is `<label>/<file stem>`. A file
  that does not decode is an error naming the file and line, unless
  `fallback_encoding` is given: then the undecodable lines are decoded with
  it and counted in `report.notes` (the BBC corpus has one cp1252 file).
  A record is a file.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(root, None, None, 'not a directory')
  col = Collector(str(root), on_error, labels, max_examples)
  for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    for path in sorted(label_dir.glob(pattern)):
      if col.full:
        return col.finish()
      try:
        lines = list(iter_lines(read_bytes(path, None), encoding,
                                fallback_encoding, col.report.notes))
        bad = next((l for l in lines if l.error), None)
        if bad is not None:
          raise encoding_error(str(path), bad)
        label = col.label(label_dir.name, None, 'label')
        text = check_text(str(path), ''.join(l.text for l in lines).strip(), 1,
                     'text', text_transform)
        col.add(ex.ClassificationExample(f'{label_dir.name}/{path.stem}',
                                         text, None, label))
      except DataError as e:
        if e.path is None or e.path == col.source:
          e = DataError(path, e.line, e.field, e.message, reason=e.reason)
        col.fail(e)
  return col.finish()
