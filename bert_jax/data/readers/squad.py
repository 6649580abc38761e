"""SQuAD JSON (v1.1, v2.0)."""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport, describe)
from bert_jax.data.readers.lines import (encoding_error, iter_lines, read_bytes,
                                         source_name)


class _IdLines:
  """Finds the line of a question id in the raw JSON, for error messages.

  The json module does not report where an object was, so the line is found
  by searching for the `"id": "<qid>"` member; built lazily because it is
  only needed when something is wrong.
  """

  def __init__(self, text: str):
    self._text = text
    self._lines: Optional[dict[str, int]] = None

  def __call__(self, qid: Any) -> Optional[int]:
    if self._lines is None:
      self._lines = {}
      pattern = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')
      line, last = 1, 0
      for m in pattern.finditer(self._text):
        line += self._text.count('\n', last, m.start())
        last = m.start()
        try:
          key = str(json.loads(m.group(1)))
        except ValueError:
          continue
        self._lines.setdefault(key, line)
    return self._lines.get(str(qid))


def read_squad(
    path: PathLike, *,
    data: Optional[bytes] = None,
    allow_impossible: bool = True,
    allow_unanswered: bool = False,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.QAExample], ReadReport]:
  """Reads SQuAD v1.1 / v2.0 JSON (`data[].paragraphs[].qas[]`).

  Every answer's `answer_start` is checked against the context: the context
  must contain the answer text at that offset. A mismatch is a `DataError`
  naming the question id (and its line, found by searching the file). A
  v2.0 question with `is_impossible: true` gets no answers (its
  `plausible_answers` are ignored); with `allow_impossible=False` such a
  question is an error. With `allow_unanswered`, a question without
  answers (unlabelled data, e.g. for prediction) is read as unanswerable
  and counted in `report.notes['unlabelled']`. A record is a question: in
  skip mode a bad paragraph (no context) drops all its questions, each
  counted.

  A file that is not valid JSON, or has no `data` list, raises in both
  modes (there is no record to skip); the error names the line.
  """
  source = source_name(path)
  col = Collector(source, on_error, None, max_examples)
  raw = read_bytes(path, data)
  lines = list(iter_lines(raw, encoding))
  bad = next((l for l in lines if l.error), None)
  if bad is not None:
    raise encoding_error(source, bad)
  text = ''.join(l.text for l in lines)
  if not text.strip():
    raise DataError(source, None, None, 'file is empty', reason='empty file')
  try:
    doc = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(source, e.lineno, None,
                    f'invalid JSON: {e.msg} at column {e.colno}',
                    reason='invalid JSON') from None
  except RecursionError:
    raise DataError(source, None, None, 'invalid JSON: nested too deeply',
                    reason='invalid JSON') from None
  if not isinstance(doc, dict) or not isinstance(doc.get('data'), list):
    raise DataError(source, 1, 'data',
                    'expected a JSON object with a "data" list (SQuAD format)')
  id_line = _IdLines(text)
  for a, article in enumerate(doc['data']):
    paragraphs = (article.get('paragraphs') if isinstance(article, dict)
                  else None)
    if not isinstance(paragraphs, list):
      col.fail(DataError(source, None, f'data[{a}].paragraphs',
                         'expected a list', reason='bad article'))
      continue
    for p, para in enumerate(paragraphs):
      where = f'data[{a}].paragraphs[{p}]'
      qas = para.get('qas') if isinstance(para, dict) else None
      if not isinstance(qas, list):
        col.fail(DataError(source, None, f'{where}.qas', 'expected a list',
                           reason='bad paragraph'))
        continue
      context = para.get('context')
      if not isinstance(context, str) or not context.strip():
        for qa in qas:  # every question of the paragraph is lost: count each
          qid = qa.get('id') if isinstance(qa, dict) else None
          col.fail(DataError(
              source, id_line(qid) if qid is not None else None,
              f'{where}.context', f'question {qid!r}: missing or empty '
              'context', reason="field 'context': missing or empty"))
        continue
      for q, qa in enumerate(qas):
        if col.full:
          return col.finish()
        try:
          col.add(squad_question(col, source, f'{where}.qas[{q}]', qa,
                                 context, allow_impossible, id_line,
                                 allow_unanswered=allow_unanswered))
        except DataError as e:
          col.fail(e)
  return col.finish()


def squad_question(col, source, where, qa, context, allow_impossible,
                   id_line, *, allow_unanswered=False):
  """One SQuAD question `qa` (a dict: id, question, answers, ...) on
  `context` -> a checked QA example; `where` names it in errors and
  `id_line(qid)` finds its line. The tfds reader shares it."""
  if not isinstance(qa, dict):
    raise DataError(source, None, where, 'expected a JSON object',
                    reason='bad question')
  qid = qa.get('id')
  line = id_line(qid) if qid is not None else None
  if qid is None:
    raise DataError(source, line, f'{where}.id', 'missing question id',
                    reason="field 'id': missing")
  guid = col.guid(qid, line, 'id', register=False)
  label = f'question {guid!r}'
  question = qa.get('question')
  if not isinstance(question, str) or not question.strip():
    raise DataError(source, line, 'question',
                    f'{label}: missing or empty question',
                    reason="field 'question': missing or empty")
  impossible = qa.get('is_impossible', False)
  if not isinstance(impossible, bool):
    raise DataError(source, line, 'is_impossible',
                    f'{label}: expected true/false, got '
                    f'{describe(impossible)}',
                    reason="field 'is_impossible': not a boolean")
  answers_in = qa.get('answers', [])
  if not isinstance(answers_in, list):
    raise DataError(source, line, 'answers', f'{label}: expected a list',
                    reason="field 'answers': not a list")
  if impossible:
    if not allow_impossible:
      raise DataError(source, line, 'is_impossible',
                      f'{label}: impossible question not allowed',
                      reason='impossible question')
    if answers_in:
      raise DataError(source, line, 'answers',
                      f'{label}: is_impossible but has answers',
                      reason="field 'answers': answers on impossible question")
    col.guid(qid, line, 'id')
    col.report.notes['impossible'] += 1
    return ex.QAExample(guid, question, context, (), True)
  if not answers_in and allow_unanswered:
    col.guid(qid, line, 'id')
    col.report.notes['unlabelled'] += 1
    return ex.QAExample(guid, question, context, (), True)
  if not answers_in:
    raise DataError(source, line, 'answers', f'{label}: no answers',
                    reason="field 'answers': empty")
  answers = []
  for i, ans in enumerate(answers_in):
    field = f'answers[{i}]'
    if not isinstance(ans, dict):
      raise DataError(source, line, field, f'{label}: expected an object',
                      reason="field 'answers': bad answer")
    atext, start = ans.get('text'), ans.get('answer_start')
    if not isinstance(atext, str) or not atext.strip():
      raise DataError(source, line, f'{field}.text',
                      f'{label}: missing or empty answer text',
                      reason="field 'answers': empty answer text")
    if isinstance(start, bool) or not isinstance(start, int):
      raise DataError(source, line, f'{field}.answer_start',
                      f'{label}: expected an integer, got {describe(start)}',
                      reason="field 'answer_start': not an integer")
    if start < 0 or context[start:start + len(atext)] != atext:
      found = context[max(start, 0):max(start, 0) + len(atext)]
      raise DataError(source, line, f'{field}.answer_start',
                      f'{label}: answer {atext[:40]!r} is not at offset '
                      f'{start} of the context (found {found[:40]!r})',
                      reason="field 'answer_start': does not match context")
    answers.append((atext, start))
  col.guid(qid, line, 'id')
  return ex.QAExample(guid, question, context, tuple(answers), False)
