"""JSON lines classification files, and the JSON-object helpers the
other JSON-lines readers share.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator, Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport, check_text)
from bert_jax.data.readers.lines import (encoding_error, iter_lines, read_bytes,
                                         source_name)


def iter_json_objects(col: Collector, raw: bytes, encoding: str
                       ) -> Iterator[tuple[int, dict]]:
  """Yields (line, object) for each non-blank line; bad lines go to `col`."""
  source = col.source
  for line in iter_lines(raw, encoding, notes=col.report.notes):
    if not line.text.strip():
      continue  # blank lines (e.g. a trailing one) are not records
    if col.full:
      return
    try:
      if line.error:
        raise encoding_error(source, line)
      try:
        obj = json.loads(line.text)
      except json.JSONDecodeError as e:
        raise DataError(source, line.number, None,
                        f'invalid JSON: {e.msg} at column {e.colno}',
                        reason='invalid JSON') from None
      except RecursionError:
        raise DataError(source, line.number, None,
                        'invalid JSON: nested too deeply',
                        reason='invalid JSON') from None
      if not isinstance(obj, dict):
        raise DataError(source, line.number, None,
                        f'expected a JSON object, got {type(obj).__name__}',
                        reason='not a JSON object')
    except DataError as e:
      col.fail(e)
      continue
    yield line.number, obj


def require_field(source, obj: dict, field: str, line: int):
  """`obj[field]`; a missing field is a `DataError` naming it."""
  if field not in obj:
    raise DataError(source, line, field, 'missing',
                    reason=f'field {field!r}: missing')
  return obj[field]


def json_texts(source, obj, line, text_field, text_pair_field,
               text_transform):
  """(text, text pair or None) of a JSON record, each checked (non-empty,
  a string), errors naming file, line and field."""
  text = check_text(source, require_field(source, obj, text_field, line),
                    line, text_field, text_transform)
  pair = None
  if text_pair_field is not None:
    pair = check_text(source, require_field(source, obj, text_pair_field, line),
                      line, text_pair_field, text_transform)
  return text, pair


def read_jsonl(
    path: PathLike, *,
    data: Optional[bytes] = None,
    text_field: str = 'text',
    text_pair_field: Optional[str] = None,
    label_field: Optional[str] = 'label',
    guid_field: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    allow_unlabelled: bool = False,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.ClassificationExample], ReadReport]:
  """Reads one JSON object per line as a classification example.

  Labels may be JSON strings, integers or booleans (`true` becomes 'True').
  With `allow_unlabelled`, a missing or null label gives an unlabelled
  example, counted in `report.notes['unlabelled']`; otherwise it is an
  error. Blank lines are ignored. Other arguments as for `read_delimited`.
  """
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  for line, obj in iter_json_objects(col, raw, encoding):
    try:
      text, pair = json_texts(source, obj, line, text_field, text_pair_field,
                              text_transform)
      label = None
      if label_field is not None:
        value = obj.get(label_field)
        if value is None and allow_unlabelled:
          pass  # counted in notes once the record is read
        elif value is None:
          raise DataError(source, line, label_field, 'missing',
                          reason=f'field {label_field!r}: missing')
        else:
          label = col.label(value, line, label_field)
      if guid_field is not None:
        guid = col.guid(require_field(source, obj, guid_field, line), line,
                        guid_field)
      else:
        guid = f'{os.path.basename(source)}:{line}'
      col.add(ex.ClassificationExample(guid, text, pair, label))
      if label is None and label_field is not None:
        col.report.notes['unlabelled'] += 1
    except DataError as e:
      col.fail(e)
  return col.finish()
