"""Tests of bert_jax.data.readers: formats, error locations, fuzzing.

The fuzz tests build inputs from valid records, corrupt some of them in ways
that must be caught, and check the contract of every reader:
  * on_error='raise': a DataError whose message names the file and the line
    of the first bad record, and no other exception type;
  * on_error='skip': exactly the good records are read, every bad one is
    counted (read + skipped == records), nothing is dropped silently.
A second family feeds arbitrary bytes to every reader: the only exception
allowed is DataError, with a line inside the input.
"""

import collections
import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_jax.data import examples as ex
from bert_jax.data import readers
from bert_jax.data.readers import ConfigError, DataError
from bert_jax.data.readers import errors as errors_lib
from bert_jax.data.readers import lines as lines_lib
from bert_jax.data.readers import tfds as tfds_reader

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

LABELS = ('negative', 'neutral', 'positive')

# Words: letters, digits, some punctuation and symbols (multi-byte UTF-8
# included); no whitespace, quotes, tabs, commas or angle brackets, so that a
# valid record stays valid in every format.
_CHARS = st.characters(codec='utf-8',
                       categories=('Lu', 'Ll', 'Lo', 'Nd', 'Po', 'Sm', 'So'),
                       exclude_characters='"\'\\<>,')
WORD = st.text(_CHARS, min_size=1, max_size=6)
SENTENCE = st.lists(WORD, min_size=1, max_size=6).map(' '.join)


def assert_located(err: DataError, name: str, line):
  """The error names the file and the expected line."""
  assert isinstance(err, DataError)
  assert name in str(err)
  assert err.line == line, str(err)
  if line is not None:
    assert f'{name}:{line}:' in str(err)


# ---------------------------------------------------------------------------
# DataError and ReadReport.


def test_data_error_format_matches_the_documented_form():
  err = DataError('drugsComTrain.tsv', 17, 'rating',
                  "unknown label 'postive' (known: negative, neutral, "
                  'positive)')
  assert str(err) == ("drugsComTrain.tsv:17: field 'rating': unknown label "
                      "'postive' (known: negative, neutral, positive)")
  assert isinstance(err, ValueError)
  assert str(DataError('f.txt', None, None, 'empty')) == 'f.txt: empty'


def test_data_error_pickles():
  import pickle
  err = DataError('a.tsv', 3, 'text', 'empty text', reason='empty')
  back = pickle.loads(pickle.dumps(err))
  assert (back.path, back.line, back.field, back.reason) == (
      'a.tsv', 3, 'text', 'empty')
  assert str(back) == str(err)


def test_unknown_label_in_real_header_layout_names_file_line_field(tmp_path):
  # The drugs.com layout: unnamed id column, a multi-line quoted review.
  rows = ['\tdrugName\tcondition\treview\trating\tdate\tusefulCount']
  for i in range(14):
    rows.append(f'{i}\tX\tY\t"""fine {i}"""\tpositive\tMay 1, 2011\t1')
  rows.append('99\tX\tY\t"""two\nlines"""\tneutral\tMay 1, 2011\t1')  # 16-17
  rows.append('100\tX\tY\t"""bad"""\tpostive\tMay 1, 2011\t1')       # 18
  path = tmp_path / 'drugsComTrain.tsv'
  path.write_text('\n'.join(rows) + '\n', encoding='utf-8')
  kwargs = dict(text_field='review', label_field='rating', guid_field=0,
                labels=LABELS)
  with pytest.raises(DataError) as info:
    readers.read_delimited(path, **kwargs)
  assert str(info.value).endswith(
      "drugsComTrain.tsv:18: field 'rating': unknown label 'postive' (known: "
      'negative, neutral, positive)')
  examples, report = readers.read_delimited(path, on_error='skip', **kwargs)
  assert (report.read, report.skipped) == (15, 1)
  assert report.skipped_reasons == {"field 'rating': unknown label": 1}
  assert examples[-1].text == '"two\nlines"'
  assert examples[-1].guid == '99'
  assert report.errors[0].line == 18


# ---------------------------------------------------------------------------
# Delimited files.


def _tsv(rows, eol=b'\n'):
  return eol.join(rows) + eol


def test_delimited_basic_header_pair_and_collected_labels():
  data = _tsv([b'a\tb\ty', b'first\tsecond\t10', b'x\ty\t2', b'p\tq\t10'])
  examples, report = readers.read_delimited(
      'pairs.tsv', data=data, text_field='a', text_pair_field='b',
      label_field='y')
  assert [e.text_pair for e in examples] == ['second', 'y', 'q']
  assert report.labels == ('2', '10')  # numeric order, not string order
  assert examples[0].guid == 'pairs.tsv:2'


def test_delimited_without_header_uses_indices_and_csv_quoting():
  data = b'"hello, world",pos\n"say ""hi""",neg\n'
  examples, report = readers.read_delimited(
      'x.csv', data=data, delimiter=',', header=False, text_field=0,
      label_field=1)
  assert [e.text for e in examples] == ['hello, world', 'say "hi"']
  assert report.labels == ('neg', 'pos')


def test_delimited_quoting_none_keeps_quotes():
  data = b'text\tlabel\n"quoted\tpos\n'
  with pytest.raises(DataError):
    readers.read_delimited('q.tsv', data=data)  # unbalanced under CSV rules
  examples, _ = readers.read_delimited('q.tsv', data=data, quoting='none')
  assert examples[0].text == '"quoted'


def test_delimited_unbalanced_quote_names_its_line_and_span():
  data = _tsv([b'text\tlabel', b'ok\tpos', b'"open\tpos', b'more\tneg',
               b'last\tneg'])
  with pytest.raises(DataError) as info:
    readers.read_delimited('u.tsv', data=data)
  assert_located(info.value, 'u.tsv', 3)
  assert 'lines 3-5' in str(info.value)


def test_delimited_config_errors_raise_in_skip_mode():
  data = _tsv([b'text\tlabel', b'a\tpos'])
  with pytest.raises(ConfigError, match="no column 'review'"):
    readers.read_delimited('c.tsv', data=data, text_field='review',
                           on_error='skip')
  with pytest.raises(ConfigError, match='no header'):
    readers.read_delimited('c.tsv', data=data, header=False,
                           on_error='skip')
  with pytest.raises(ConfigError, match='out of range'):
    readers.read_delimited('c.tsv', data=data, header=False, text_field=0,
                           label_field=5)


def test_delimited_unlabelled_and_allow_unlabelled():
  data = _tsv([b'text\tlabel', b'a\t', b'b\tpos'])
  with pytest.raises(DataError, match='empty label'):
    readers.read_delimited('l.tsv', data=data)
  examples, report = readers.read_delimited('l.tsv', data=data,
                                            allow_unlabelled=True)
  assert [e.label for e in examples] == [None, 'pos']
  assert report.notes['unlabelled'] == 1
  examples, _ = readers.read_delimited('l.tsv', data=data, label_field=None)
  assert all(e.label is None for e in examples)


def test_delimited_max_examples_truncates_and_reports():
  data = _tsv([b'text\tlabel'] + [b'a\tpos'] * 5)
  examples, report = readers.read_delimited('m.tsv', data=data,
                                            max_examples=2)
  assert len(examples) == 2 and report.truncated
  _, report = readers.read_delimited('m.tsv', data=data, max_examples=5)
  assert not report.truncated


def test_empty_inputs_are_errors():
  for reader in (readers.read_delimited, readers.read_jsonl,
                 readers.read_conll, readers.read_semeval,
                 readers.read_relation_jsonl, readers.read_squad):
    for data in (b'', b'\n\n', b'  \r\n'):
      with pytest.raises(DataError) as info:
        reader('empty.dat', data=data, on_error='skip')
      assert 'empty.dat' in str(info.value)
  with pytest.raises(DataError, match='no records'):
    readers.read_delimited('h.tsv', data=b'text\tlabel\n')


def test_missing_file_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match='cannot read'):
    readers.read_jsonl(tmp_path / 'nope.jsonl')


def test_bom_and_crlf_are_accepted():
  data = b'\xef\xbb\xbftext\tlabel\r\nhello\tpos\r\n'
  examples, report = readers.read_delimited('b.tsv', data=data)
  assert examples[0].text == 'hello' and report.labels == ('pos',)


_TSV_FAULTS = ('ok', 'ok', 'ok', 'missing_column', 'extra_column',
               'empty_text', 'unknown_label', 'bad_utf8', 'empty_label')


@FUZZ
@given(rows=st.lists(st.tuples(SENTENCE, st.sampled_from(LABELS),
                               st.sampled_from(_TSV_FAULTS)),
                     min_size=1, max_size=12),
       crlf=st.booleans(), blanks=st.booleans())
def test_delimited_fuzz(rows, crlf, blanks):
  eol = b'\r\n' if crlf else b'\n'
  lines = [b'id\ttext\tlabel']
  good, bad_lines = [], []
  for i, (text, label, fault) in enumerate(rows):
    t, l = text.encode(), label.encode()
    fields = [str(i).encode(), t, l]
    if fault == 'missing_column':
      fields = fields[:2]
    elif fault == 'extra_column':
      fields.append(b'extra')
    elif fault == 'empty_text':
      fields[1] = b'  '
    elif fault == 'unknown_label':
      fields[2] = b'postive'
    elif fault == 'bad_utf8':
      fields[1] = t + b'\xff'
    elif fault == 'empty_label':
      fields[2] = b''
    lines.append(b'\t'.join(fields))
    (good if fault == 'ok' else bad_lines).append(
        (text, label) if fault == 'ok' else len(lines))
    if blanks and i % 3 == 0:
      lines.append(b'')
  data = eol.join(lines) + eol
  kwargs = dict(data=data, guid_field='id', labels=LABELS)
  if bad_lines:
    with pytest.raises(DataError) as info:
      readers.read_delimited('fuzz.tsv', **kwargs)
    assert_located(info.value, 'fuzz.tsv', bad_lines[0])
  else:
    examples, _ = readers.read_delimited('fuzz.tsv', **kwargs)
    assert [(e.text, e.label) for e in examples] == good
  if not good and not bad_lines:
    return
  examples, report = readers.read_delimited('fuzz.tsv', on_error='skip',
                                            **kwargs)
  assert [(e.text, e.label) for e in examples] == good
  assert report.read == len(good) and report.skipped == len(bad_lines)
  assert report.read + report.skipped == len(rows)
  assert sum(report.skipped_reasons.values()) == report.skipped
  assert [e.line for e in report.errors] == bad_lines[:readers.MAX_KEPT_ERRORS]


# ---------------------------------------------------------------------------
# JSONL.


def test_jsonl_labels_types_and_unlabelled():
  data = b'\n'.join([
      json.dumps({'q': 'a', 'p': 'b', 'label': True}).encode(),
      b'',
      json.dumps({'q': 'c', 'p': 'd', 'label': False}).encode(),
      json.dumps({'q': 'e', 'p': 'f'}).encode(),
  ])
  with pytest.raises(DataError) as info:
    readers.read_jsonl('b.jsonl', data=data, text_field='q',
                       text_pair_field='p')
  assert_located(info.value, 'b.jsonl', 4)
  assert info.value.field == 'label'
  examples, report = readers.read_jsonl(
      'b.jsonl', data=data, text_field='q', text_pair_field='p',
      allow_unlabelled=True)
  assert [e.label for e in examples] == ['True', 'False', None]
  assert report.labels == ('False', 'True')
  assert report.notes['unlabelled'] == 1


def test_jsonl_deep_nesting_is_a_data_error():
  data = b'[' * 100000 + b']' * 100000 + b'\n'
  with pytest.raises(DataError) as info:
    readers.read_jsonl('deep.jsonl', data=data)
  assert_located(info.value, 'deep.jsonl', 1)


_JSONL_FAULTS = ('ok', 'ok', 'ok', 'broken_json', 'not_object',
                 'missing_text', 'text_not_string', 'empty_text',
                 'unknown_label', 'bad_utf8', 'null_label', 'duplicate_id')

_JSON_TEXT = st.text(st.characters(codec='utf-8', exclude_categories=('Cs',)),
                     min_size=1, max_size=30).filter(lambda s: s.strip())


@FUZZ
@given(rows=st.lists(st.tuples(_JSON_TEXT, st.sampled_from(LABELS),
                               st.sampled_from(_JSONL_FAULTS)),
                     min_size=1, max_size=12),
       blanks=st.booleans())
def test_jsonl_fuzz(rows, blanks):
  lines = []
  good, bad_lines, good_ids = [], [], []
  for i, (text, label, fault) in enumerate(rows):
    obj = {'id': f'r{i}', 'text': text, 'label': label}
    if fault == 'missing_text':
      del obj['text']
    elif fault == 'text_not_string':
      obj['text'] = 3
    elif fault == 'empty_text':
      obj['text'] = ' \t'
    elif fault == 'unknown_label':
      obj['label'] = 'postive'
    elif fault == 'null_label':
      obj['label'] = None
    elif fault == 'duplicate_id':
      if good_ids:
        obj['id'] = good_ids[0]  # the id of an earlier record that was read
      else:
        fault = 'ok'  # nothing read yet: the id is still unique
    line = json.dumps(obj, ensure_ascii=False).encode('utf-8')
    if fault == 'broken_json':
      line = line[:-1]
    elif fault == 'not_object':
      line = b'[' + line + b']'
    elif fault == 'bad_utf8':
      line = line[:-1] + b', "x": "\xc3\x28"}'
    lines.append(line)
    (good if fault == 'ok' else bad_lines).append(
        (text, label) if fault == 'ok' else len(lines))
    if fault == 'ok':
      good_ids.append(obj['id'])
    if blanks and i % 4 == 1:
      lines.append(b'   ')
  data = b'\n'.join(lines)
  kwargs = dict(data=data, guid_field='id', labels=LABELS)
  if bad_lines:
    with pytest.raises(DataError) as info:
      readers.read_jsonl('fuzz.jsonl', **kwargs)
    assert_located(info.value, 'fuzz.jsonl', bad_lines[0])
  if not good:
    return
  examples, report = readers.read_jsonl('fuzz.jsonl', on_error='skip',
                                        **kwargs)
  assert [(e.text, e.label) for e in examples] == good
  assert (report.read, report.skipped) == (len(good), len(bad_lines))
  assert report.read + report.skipped == len(rows)
  assert [e.line for e in report.errors] == bad_lines


# ---------------------------------------------------------------------------
# CoNLL.


CONLL = b"""-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def test_conll_2003_columns_docstart_and_crlf():
  for data in (CONLL, CONLL.replace(b'\n', b'\r\n')):
    examples, report = readers.read_conll('eng.conll', data=data)
    assert [e.words for e in examples] == [
        ('EU', 'rejects', 'German', 'call'), ('Peter', 'Blackburn'),
        ('BRUSSELS',)]
    assert examples[0].tags == ('B-ORG', 'O', 'B-MISC', 'O')
    assert report.notes['documents'] == 2
    assert examples[1].guid == 'eng.conll:8'
  examples, _ = readers.read_conll('eng.conll', data=CONLL, tag_column=1)
  assert examples[0].tags == ('NNP', 'VBZ', 'JJ', 'NN')
  examples, report = readers.read_conll('eng.conll', data=CONLL,
                                        tag_column=None)
  assert examples[0].tags is None


def test_conll_wrong_columns_names_the_line():
  data = CONLL.replace(b'call NN I-NP O', b'call NN O')
  with pytest.raises(DataError) as info:
    readers.read_conll('eng.conll', data=data)
  assert_located(info.value, 'eng.conll', 6)
  assert 'expected 4 columns, got 3' in str(info.value)
  examples, report = readers.read_conll('eng.conll', data=data,
                                        on_error='skip')
  assert len(examples) == 2 and report.skipped == 1


def test_conll_bad_tag_column_is_a_config_error():
  with pytest.raises(ConfigError):
    readers.read_conll('eng.conll', data=CONLL, tag_column=7,
                       on_error='skip')


def test_conll_msra_two_columns():
  data = '中 B-ORG\r\n国 E-ORG\r\n人 O\r\n\r\n他 S-PER\r\n'.encode()
  examples, report = readers.read_conll('msra.txt', data=data,
                                        num_columns=2)
  assert examples[0].words == ('中', '国', '人')
  assert examples[1].tags == ('S-PER',)
  assert report.labels == ('B-ORG', 'E-ORG', 'O', 'S-PER')


def test_conll_tab_delimiter_keeps_spaces_in_tokens():
  data = b'New York\tB-LOC\nis\tO\n'
  examples, _ = readers.read_conll('t.conll', data=data, delimiter='\t')
  assert examples[0].words == ('New York', 'is')


_CONLL_TAGS = ('O', 'B-PER', 'I-PER', 'B-LOC')
_CONLL_FAULTS = ('ok', 'ok', 'ok', 'missing_column', 'extra_column',
                 'unknown_tag', 'bad_utf8')


@FUZZ
@given(sentences=st.lists(
    st.tuples(st.lists(st.tuples(WORD, st.sampled_from(_CONLL_TAGS)),
                       min_size=1, max_size=5),
              st.sampled_from(_CONLL_FAULTS), st.integers(0, 4),
              st.booleans()),
    min_size=1, max_size=8),
       crlf=st.booleans(), msra=st.booleans())
def test_conll_fuzz(sentences, crlf, msra):
  lines = []
  good, bad_lines = [], []
  for tokens, fault, where, docstart in sentences:
    if docstart:
      lines.append(b'-DOCSTART- -X- -X- O' if not msra else b'-DOCSTART- O')
      lines.append(b'')
    where = min(where, len(tokens) - 1)
    bad_line = None
    for k, (word, tag) in enumerate(tokens):
      cells = [word.encode(), tag.encode()] if msra else [
          word.encode(), b'NN', b'I-NP', tag.encode()]
      if k == where and fault != 'ok':
        if fault == 'missing_column':
          cells = cells[:-1]
        elif fault == 'extra_column':
          cells.append(b'X')
        elif fault == 'unknown_tag':
          cells[-1] = b'B-XYZ'
        elif fault == 'bad_utf8':
          cells[0] += b'\xfe'
        bad_line = len(lines) + 1
      lines.append(b' '.join(cells))
    lines.append(b'')
    if fault == 'ok':
      good.append(tuple(w for w, _ in tokens))
    else:
      bad_lines.append(bad_line)
  data = (b'\r\n' if crlf else b'\n').join(lines)
  kwargs = dict(data=data, labels=_CONLL_TAGS,
                num_columns=2 if msra else 4)
  if bad_lines:
    with pytest.raises(DataError) as info:
      readers.read_conll('fuzz.conll', **kwargs)
    assert_located(info.value, 'fuzz.conll', bad_lines[0])
  if not good:
    return
  examples, report = readers.read_conll('fuzz.conll', on_error='skip',
                                        **kwargs)
  assert [e.words for e in examples] == good
  assert (report.read, report.skipped) == (len(good), len(bad_lines))
  assert [e.line for e in report.errors] == bad_lines


# ---------------------------------------------------------------------------
# SemEval-2010 Task 8 and relation JSONL.


SEMEVAL = b'\n'.join([
    b'1\t"The system as described above has its greatest application in an '
    b'arrayed <e1>configuration</e1> of antenna <e2>elements</e2>."',
    b'Component-Whole(e2,e1)',
    b'Comment: Not a collection: there is structure here, organisation.',
    b'',
    b'2\t"The <e1>child</e1> was carefully wrapped and bound into the '
    b'<e2>cradle</e2> by means of a cord."',
    b'Other',
    b'Comment:',
    b'', b''])


def test_semeval_words_spans_and_labels():
  examples, report = readers.read_semeval('TRAIN_FILE.TXT', data=SEMEVAL)
  first = examples[0]
  assert first.guid == '1'
  assert first.words[first.head[0]:first.head[1]] == ('configuration',)
  assert first.words[first.tail[0]:first.tail[1]] == ('elements',)
  assert first.words[-1] == '.'  # the marker split 'elements</e2>.'
  assert '<e1>' not in ' '.join(first.words)
  assert first.label == 'Component-Whole(e2,e1)'
  assert report.labels == ('Component-Whole(e2,e1)', 'Other')
  crlf, _ = readers.read_semeval('t', data=SEMEVAL.replace(b'\n', b'\r\n'))
  assert crlf == examples


def test_semeval_multiword_entities_and_unlabelled_mode():
  data = b'8001\t"A <e1>big old dog</e1> bit the <e2>mail man</e2>"\n'
  examples, _ = readers.read_semeval('TEST_FILE.txt', data=data,
                                     labelled=False)
  e = examples[0]
  assert e.words[e.head[0]:e.head[1]] == ('big', 'old', 'dog')
  assert e.words[e.tail[0]:e.tail[1]] == ('mail', 'man')
  assert e.label is None


@pytest.mark.parametrize('sentence,message', [
    ('The child was in the <e2>cradle</e2>.', 'marker <e1> missing'),
    ('The <e1>child</e1> <e2>in</e2> the <e2>cradle</e2>.',
     '<e2> appears 2 times'),
    ('The </e1>child<e1> in the <e2>cradle</e2>.', '</e1> comes before'),
    ('<e1>A <e2>B</e1> C</e2>', 'overlap'),
    ('<e1></e1> x <e2>y</e2>', 'entity e1 is empty'),
])
def test_semeval_bad_markers_name_the_line(sentence, message):
  data = SEMEVAL + f'3\t"{sentence}"\nOther\nComment:\n'.encode()
  with pytest.raises(DataError, match=message) as info:
    readers.read_semeval('TRAIN_FILE.TXT', data=data)
  assert_located(info.value, 'TRAIN_FILE.TXT', 9)
  assert info.value.field == 'sentence'


_SEMEVAL_LABELS = ('Other', 'Cause-Effect(e1,e2)', 'Cause-Effect(e2,e1)')
_SEMEVAL_FAULTS = ('ok', 'ok', 'ok', 'missing_e1', 'double_e2', 'bad_label',
                   'unknown_label', 'no_tab', 'bad_utf8', 'extra_line',
                   'no_label_line')


@FUZZ
@given(blocks=st.lists(st.tuples(SENTENCE, SENTENCE, SENTENCE,
                                 st.sampled_from(_SEMEVAL_LABELS),
                                 st.sampled_from(_SEMEVAL_FAULTS)),
                       min_size=1, max_size=8),
       crlf=st.booleans())
def test_semeval_fuzz(blocks, crlf):
  lines = []
  good, bad_lines = [], []
  for i, (a, b, c, label, fault) in enumerate(blocks):
    sentence = f'{a} <e1>{b}</e1> and <e2>{c}</e2> .'
    if fault == 'missing_e1':
      sentence = sentence.replace('<e1>', '')
    elif fault == 'double_e2':
      sentence = sentence.replace('</e2>', '</e2><e2>')
    head = f'{i + 1}\t"{sentence}"'.encode()
    if fault == 'no_tab':
      head = head.replace(b'\t', b' ')
    elif fault == 'bad_utf8':
      head += b'\xff'
    lines.append(head)
    sentence_line = len(lines)
    if fault != 'no_label_line':
      lines.append({'bad_label': b'Cause-Effect(e3,e1)',
                    'unknown_label': b'Member-Collection(e1,e2)'}.get(
                        fault, label.encode()))
    label_line = len(lines)
    lines.append(b'Comment: fine')
    if fault == 'extra_line':
      lines.append(b'stray text')
    lines.append(b'')
    if fault == 'ok':
      good.append((b, c, label))
    elif fault in ('bad_label', 'unknown_label'):
      bad_lines.append(label_line)
    elif fault == 'extra_line':
      bad_lines.append(label_line + 2)
    elif fault == 'no_label_line':
      bad_lines.append(sentence_line + 1)  # 'Comment:' is not a label
    else:
      bad_lines.append(sentence_line)
  data = (b'\r\n' if crlf else b'\n').join(lines)
  if bad_lines:
    with pytest.raises(DataError) as info:
      readers.read_semeval('fuzz.txt', data=data, labels=_SEMEVAL_LABELS)
    assert_located(info.value, 'fuzz.txt', bad_lines[0])
  if not good:
    return
  examples, report = readers.read_semeval('fuzz.txt', data=data,
                                          labels=_SEMEVAL_LABELS,
                                          on_error='skip')
  got = [(' '.join(e.words[slice(*e.head)]), ' '.join(e.words[slice(*e.tail)]),
          e.label) for e in examples]
  assert got == good
  assert (report.read, report.skipped) == (len(good), len(bad_lines))
  assert [e.line for e in report.errors] == bad_lines


def test_relation_jsonl_spans():
  rows = [
      {'tokens': ['Bill', 'Gates', 'founded', 'Microsoft'], 'head': [0, 2],
       'tail': {'start': 3, 'end': 4}, 'relation': 'founder'},
      {'tokens': ['a', 'b', 'c'], 'head': [0, 0], 'tail': [2, 2],
       'relation': 'x'},
  ]
  data = b'\n'.join(json.dumps(r).encode() for r in rows)
  with pytest.raises(DataError) as info:
    readers.read_relation_jsonl('rel.jsonl', data=data)
  assert_located(info.value, 'rel.jsonl', 2)
  assert info.value.field == 'head'
  examples, report = readers.read_relation_jsonl('rel.jsonl', data=data,
                                                 on_error='skip')
  assert examples[0].head == (0, 2) and examples[0].tail == (3, 4)
  assert report.skipped == 1
  # TACRED-style inclusive ends: [0, 0] is the first word.
  examples, _ = readers.read_relation_jsonl(
      'rel.jsonl', data=data.split(b'\n')[1], span_end_inclusive=True)
  assert examples[0].head == (0, 1) and examples[0].tail == (2, 3)


_REL_FAULTS = ('ok', 'ok', 'ok', 'out_of_range', 'reversed', 'not_int',
               'missing_tail', 'empty_word', 'unknown_label')


@FUZZ
@given(rows=st.lists(st.tuples(st.lists(WORD, min_size=2, max_size=6),
                               st.sampled_from(_REL_FAULTS)),
                     min_size=1, max_size=10))
def test_relation_jsonl_fuzz(rows):
  lines, good, bad_lines = [], [], []
  for words, fault in rows:
    obj = {'tokens': words, 'head': [0, 1], 'tail': [1, len(words)],
           'relation': 'r1'}
    if fault == 'out_of_range':
      obj['tail'] = [1, len(words) + 1]
    elif fault == 'reversed':
      obj['head'] = [1, 0]
    elif fault == 'not_int':
      obj['head'] = ['0', 1]
    elif fault == 'missing_tail':
      del obj['tail']
    elif fault == 'empty_word':
      obj['tokens'] = words[:-1] + ['']
    elif fault == 'unknown_label':
      obj['relation'] = 'r9'
    lines.append(json.dumps(obj, ensure_ascii=False).encode())
    (good if fault == 'ok' else bad_lines).append(
        tuple(words) if fault == 'ok' else len(lines))
  data = b'\n'.join(lines)
  if bad_lines:
    with pytest.raises(DataError) as info:
      readers.read_relation_jsonl('fuzz.jsonl', data=data, labels=['r1'])
    assert_located(info.value, 'fuzz.jsonl', bad_lines[0])
  if not good:
    return
  examples, report = readers.read_relation_jsonl(
      'fuzz.jsonl', data=data, labels=['r1'], on_error='skip')
  assert [e.words for e in examples] == good
  assert (report.read, report.skipped) == (len(good), len(bad_lines))


# ---------------------------------------------------------------------------
# SQuAD.


def _squad(questions_per_paragraph, version='v2.0'):
  return {'version': version, 'data': [{'title': 'T', 'paragraphs': [
      {'context': ctx, 'qas': qas}
      for ctx, qas in questions_per_paragraph]}]}


def test_squad_v2_answers_and_impossible():
  context = 'The Normans gave their name to Normandy in France.'
  doc = _squad([(context, [
      {'id': 'q1', 'question': 'Who?', 'answers': [
          {'text': 'Normans', 'answer_start': 4},
          {'text': 'The Normans', 'answer_start': 0}]},
      {'id': 'q2', 'question': 'When?', 'answers': [],
       'is_impossible': True,
       'plausible_answers': [{'text': 'France', 'answer_start': 43}]},
  ])])
  examples, report = readers.read_squad(
      'dev-v2.0.json', data=json.dumps(doc).encode())
  assert examples[0].answers == (('Normans', 4), ('The Normans', 0))
  assert examples[1].is_impossible and examples[1].answers == ()
  assert report.notes['impossible'] == 1
  with pytest.raises(DataError, match='impossible question not allowed'):
    readers.read_squad('dev-v2.0.json', data=json.dumps(doc).encode(),
                       allow_impossible=False)


def test_squad_mismatch_names_question_id_and_line():
  doc = _squad([('abc def', [
      {'id': 'ok1', 'question': 'q?', 'answers': [
          {'text': 'def', 'answer_start': 4}]},
      {'id': '56be4db0acb8001400a502ee', 'question': 'q?', 'answers': [
          {'text': 'def', 'answer_start': 3}]}])])
  text = json.dumps(doc, indent=2)
  line = next(i for i, l in enumerate(text.split('\n'), 1)
              if '56be4db0acb8001400a502ee' in l)
  with pytest.raises(DataError) as info:
    readers.read_squad('train-v1.1.json', data=text.encode())
  assert_located(info.value, 'train-v1.1.json', line)
  assert '56be4db0acb8001400a502ee' in str(info.value)
  assert 'answer_start' in info.value.field


def test_squad_invalid_json_names_the_line():
  text = '{\n "data": [\n  {"paragraphs": [}\n ]\n}\n'
  with pytest.raises(DataError) as info:
    readers.read_squad('broken.json', data=text.encode(), on_error='skip')
  assert_located(info.value, 'broken.json', 3)
  with pytest.raises(DataError, match='"data" list'):
    readers.read_squad('list.json', data=b'[1, 2]')


_SQUAD_FAULTS = ('ok', 'ok', 'ok', 'start_past_end', 'start_negative',
                 'start_not_int', 'empty_question', 'impossible_with_answers',
                 'no_answers', 'duplicate_id', 'empty_answer')


@FUZZ
@given(paragraphs=st.lists(
    st.tuples(st.lists(WORD, min_size=3, max_size=8),
              st.lists(st.tuples(st.integers(0, 7),
                                 st.sampled_from(_SQUAD_FAULTS)),
                       min_size=1, max_size=4),
              st.booleans()),
    min_size=1, max_size=4))
def test_squad_fuzz(paragraphs):
  doc_paragraphs, good, bad_ids, n = [], [], [], 0
  for words, questions, no_context in paragraphs:
    context = ' '.join(words)
    qas = []
    for pick, fault in questions:
      n += 1
      qid = f'id{n:04d}'
      word = words[min(pick, len(words) - 1)]
      start = context.index(word)
      qa = {'id': qid, 'question': f'question {n}?',
            'answers': [{'text': word, 'answer_start': start}]}
      if fault == 'start_past_end':
        qa['answers'][0]['answer_start'] = len(context)
      elif fault == 'start_negative':
        qa['answers'][0]['answer_start'] = -1
      elif fault == 'start_not_int':
        qa['answers'][0]['answer_start'] = str(start)
      elif fault == 'empty_question':
        qa['question'] = ' '
      elif fault == 'impossible_with_answers':
        qa['is_impossible'] = True
      elif fault == 'no_answers':
        qa['answers'] = []
      elif fault == 'duplicate_id':
        if good:
          qa['id'] = good[0][0]  # the id of a question that was read
        else:
          fault = 'ok'
      elif fault == 'empty_answer':
        qa['answers'][0]['text'] = ''
      qas.append(qa)
      if fault == 'ok' and not no_context:
        good.append((qa['id'], word, start))
      else:
        bad_ids.append(qa['id'])
    doc_paragraphs.append((None if no_context else context, qas))
  text = json.dumps(_squad(doc_paragraphs), indent=1)
  lines = text.split('\n')

  def line_of(qid):
    return next(i for i, l in enumerate(lines, 1) if f'"id": "{qid}"' in l)

  if bad_ids:
    with pytest.raises(DataError) as info:
      readers.read_squad('fuzz.json', data=text.encode())
    assert_located(info.value, 'fuzz.json', line_of(bad_ids[0]))
    assert bad_ids[0] in str(info.value)
  if not good:
    return
  examples, report = readers.read_squad('fuzz.json', data=text.encode(),
                                        on_error='skip')
  assert [(e.guid, e.answers[0][0], e.answers[0][1]) for e in examples] == good
  assert (report.read, report.skipped) == (len(good), len(bad_ids))
  assert report.read + report.skipped == n


# ---------------------------------------------------------------------------
# Arbitrary bytes: only DataError may escape, and reports add up.

_FRAGMENTS = [b'\t', b',', b'"', b'\n', b'\r\n', b'\xff', b'\xc3', b' ',
              b'pos', b'neg', b'text', b'label', b'{', b'}', b'[', b']',
              b':', b'"text"', b'"label"', b'"data"', b'"qas"', b'"id"',
              b'"context"', b'"paragraphs"', b'"tokens"', b'"head"',
              b'-DOCSTART-', b'<e1>', b'</e1>', b'<e2>', b'</e2>', b'Other',
              b'Comment:', b'O', b'B-PER', b'1', b'0', b'-1', b'null',
              b'true', b'\x00']

_READERS = {
    'tsv': functools.partial(readers.read_delimited, labels=['pos', 'neg']),
    'csv_noheader': functools.partial(readers.read_delimited, delimiter=',',
                                      header=False, text_field=0,
                                      label_field=1),
    'jsonl': readers.read_jsonl,
    'conll': readers.read_conll,
    'msra': functools.partial(readers.read_conll, tag_column=1,
                              num_columns=2),
    'semeval': readers.read_semeval,
    'relation_jsonl': readers.read_relation_jsonl,
    'squad': readers.read_squad,
}


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=120),
                     st.lists(st.sampled_from(_FRAGMENTS),
                              max_size=40).map(b''.join)),
       name=st.sampled_from(sorted(_READERS)),
       on_error=st.sampled_from(['raise', 'skip']))
def test_arbitrary_bytes_only_raise_data_error(raw, name, on_error):
  try:
    examples, report = _READERS[name]('any.dat', data=raw, on_error=on_error)
  except DataError as e:
    assert 'any.dat' in str(e)
    assert e.line is None or 1 <= e.line <= raw.count(b'\n') + 1
    return
  assert report.read == len(examples) > 0 or report.skipped > 0
  assert sum(report.skipped_reasons.values()) == report.skipped
  if on_error == 'raise':
    assert report.skipped == 0
  for e in examples:
    assert isinstance(e, (ex.ClassificationExample, ex.TaggingExample,
                          ex.RelationExample, ex.QAExample))


# ---------------------------------------------------------------------------
# Text directories.


def test_text_dir_labels_and_fallback_encoding(tmp_path):
  (tmp_path / 'sport').mkdir()
  (tmp_path / 'tech').mkdir()
  (tmp_path / 'sport' / '001.txt').write_text('Title\n\nBody.\n')
  (tmp_path / 'tech' / '001.txt').write_bytes(b'Chips\n\nCost \xa315m.\n')
  with pytest.raises(DataError) as info:
    readers.read_text_dir(tmp_path)
  assert_located(info.value, '001.txt', 3)
  assert 'tech' in str(info.value)
  examples, report = readers.read_text_dir(tmp_path,
                                           fallback_encoding='cp1252')
  assert examples[1].text == 'Chips\n\nCost £15m.'
  assert examples[1].guid == 'tech/001'
  assert report.labels == ('sport', 'tech')
  assert report.notes == {'lines decoded as cp1252': 1}


# ---------------------------------------------------------------------------
# TensorFlow Datasets: mapping tested with tfds.testing.mock_data (runs
# without TensorFlow through tfds.data_source).


@pytest.fixture
def tfds_mock(monkeypatch):
  """Mocks tfds.data_source with given records (the path without TF)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  # Mocked builders are never "prepared"; the check is a seam for this.
  monkeypatch.setattr(tfds_reader, '_is_prepared', lambda builder: True)
  monkeypatch.setattr(tfds_reader, '_have_tensorflow', lambda: False)

  def mock(records):
    return tfds.testing.mock_data(
        as_data_source_fn=lambda *args, **kwargs: records)
  return mock


def test_tfds_glue_sst2_and_mnli_mapping(tfds_mock):
  records = [{'sentence': b'a fine film', 'label': 1, 'idx': 0},
             {'sentence': 'dull', 'label': 0, 'idx': 1},
             {'sentence': b'unlabelled test row', 'label': -1, 'idx': 2}]
  with tfds_mock(records):
    examples, report = readers.read_tfds('glue/sst2', 'validation')
  assert [(e.text, e.label) for e in examples] == [
      ('a fine film', 'positive'), ('dull', 'negative'),
      ('unlabelled test row', None)]
  assert report.labels == ('negative', 'positive')
  assert examples[0].guid == 'glue/sst2-0'
  records = [{'premise': b'p', 'hypothesis': b'h', 'label': 2, 'idx': 5}]
  with tfds_mock(records):
    examples, report = readers.read_tfds('glue/mnli', 'validation_matched')
  assert examples[0].text_pair == 'h' and examples[0].label == 'contradiction'
  assert report.labels == ('entailment', 'neutral', 'contradiction')


def test_tfds_bad_records_are_located_or_skipped(tfds_mock):
  records = [{'sentence': b'ok', 'label': 1, 'idx': 0},
             {'sentence': b'   ', 'label': 1, 'idx': 1},
             {'sentence': b'x', 'label': 7, 'idx': 2},
             {'sentence': b'\xff', 'label': 0, 'idx': 3}]
  with tfds_mock(records):
    with pytest.raises(DataError) as info:
      readers.read_tfds('glue/sst2', 'train')
    assert_located(info.value, 'tfds:glue/sst2[train]', 2)
    examples, report = readers.read_tfds('glue/sst2', 'train',
                                         on_error='skip')
  assert len(examples) == 1 and report.skipped == 3


def test_tfds_conll2003_and_squad_mapping(tfds_mock):
  records = [{'tokens': [b'EU', b'rejects'], 'ner': [3, 0],
              'pos': [0, 0], 'chunks': [0, 0]},
             {'tokens': [b'x'], 'ner': [0, 0], 'pos': [0], 'chunks': [0]}]
  with tfds_mock(records):
    examples, report = readers.read_tfds('conll2003', 'train',
                                         on_error='skip')
  assert examples[0].words == ('EU', 'rejects')
  assert examples[0].tags == (report.labels[3], 'O')
  assert report.skipped == 1
  ctx = 'The Normans were in Normandy.'
  records = [{'id': b'q1', 'title': b't', 'context': ctx.encode(),
              'question': b'Who?',
              'answers': {'text': [b'Normans'], 'answer_start': [4]}},
             {'id': b'q2', 'title': b't', 'context': ctx.encode(),
              'question': b'Where?',
              'answers': {'text': [b'Normandy'], 'answer_start': [3]}}]
  with tfds_mock(records):
    with pytest.raises(DataError, match="'q2'"):
      readers.read_tfds('squad/v1.1', 'validation')
    examples, report = readers.read_tfds('squad/v1.1', 'validation',
                                         on_error='skip')
  assert examples[0].answers == (('Normans', 4),)
  assert report.skipped == 1
  records = [{'id': b'q3', 'title': b't', 'context': ctx.encode(),
              'question': b'Why?', 'is_impossible': True,
              'answers': {'text': [], 'answer_start': []},
              'plausible_answers': {'text': [b'Normans'],
                                    'answer_start': [4]}}]
  with tfds_mock(records):
    examples, report = readers.read_tfds('squad/v2.0', 'validation')
  assert examples[0].is_impossible and examples[0].answers == ()


def test_tfds_super_glue_boolq_mapping(tfds_mock):
  # tfds' super_glue builder module imports TensorFlow even to be built.
  pytest.importorskip('tensorflow')
  records = [{'question': b'is it', 'passage': b'yes it is', 'label': 1,
              'idx': 0}]
  with tfds_mock(records):
    examples, report = readers.read_tfds('super_glue/boolq', 'validation')
  assert (examples[0].text_pair, examples[0].label) == ('yes it is', 'True')
  assert report.labels == ('False', 'True')


@pytest.mark.parametrize('name', ['glue/qqp', 'conll2003', 'squad/v2.0'])
def test_tfds_random_mock_data_only_raises_data_error(name, monkeypatch):
  # tfds' own random records are inconsistent (tokens and tags of different
  # lengths, answers outside the context): they must be skipped, counted.
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(tfds_reader, '_is_prepared', lambda builder: True)
  monkeypatch.setattr(tfds_reader, '_have_tensorflow', lambda: False)
  with tfds.testing.mock_data(num_examples=5):
    try:
      examples, report = readers.read_tfds(name, 'train', on_error='skip')
    except DataError:
      return
  assert report.read + report.skipped == 5 == len(examples) + report.skipped


def test_tfds_load_path_with_tensorflow(monkeypatch):
  """The tfds.load path; needs TensorFlow, which is an optional extra."""
  tfds = pytest.importorskip('tensorflow_datasets')
  tf = pytest.importorskip('tensorflow')
  monkeypatch.setattr(tfds_reader, '_is_prepared', lambda builder: True)
  monkeypatch.setattr(tfds_reader, '_have_tensorflow', lambda: True)

  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensor_slices({
        'sentence': [b'a fine film', b'  ', b'dull'],
        'label': [1, 1, 0], 'idx': [0, 1, 2]})

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    examples, report = readers.read_tfds('glue/sst2', 'train',
                                         on_error='skip')
  assert [(e.text, e.label) for e in examples] == [
      ('a fine film', 'positive'), ('dull', 'negative')]
  assert report.skipped == 1 and report.errors[0].line == 2


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(DataError, match='not prepared') as info:
    readers.read_tfds('glue/sst2', 'train', data_dir=str(tmp_path))
  assert 'tfds build glue/sst2' in str(info.value)
  with pytest.raises(DataError, match='unsupported tfds dataset'):
    readers.read_tfds('mnist', 'train')


# ---------------------------------------------------------------------------
# The helpers the reader modules share (errors.py, lines.py).


def test_iter_lines_decodes_line_by_line_and_locates_a_bad_byte():
  lines = list(lines_lib.iter_lines(b'a\r\n\xffb\nc'))
  assert [l.number for l in lines] == [1, 2, 3]
  assert (lines[0].text, lines[2].text) == ('a\r\n', 'c')
  assert lines[1].error == 'invalid utf-8 (byte 0xff at column 1)'
  assert lines_lib.strip_eol(lines[0].text) == 'a'
  error = lines_lib.encoding_error('f.txt', lines[1])
  assert (error.path, error.line, error.reason) == ('f.txt', 2, 'invalid utf-8')
  # A fallback encoding decodes the bad line instead, and counts it.
  notes = collections.Counter()
  lines = list(lines_lib.iter_lines(b'ok\ncaf\xe9\n', fallback_encoding='cp1252',
                                    notes=notes))
  assert [l.text for l in lines] == ['ok\n', 'caf\u00e9\n']
  assert not any(l.error for l in lines)
  assert notes == {'lines decoded as cp1252': 1}


def test_read_bytes_prefers_given_data_and_names_an_unreadable_file(tmp_path):
  assert lines_lib.read_bytes(tmp_path / 'absent', b'given') == b'given'
  with pytest.raises(DataError, match='absent: cannot read file'):
    lines_lib.read_bytes(tmp_path / 'absent', None)
  assert lines_lib.source_name(tmp_path / 'x.tsv') == str(tmp_path / 'x.tsv')


def test_describe_names_the_type_and_cuts_long_values():
  assert errors_lib.describe(3) == 'int 3'
  text = errors_lib.describe('x' * 100)
  assert text.startswith("str 'xxx") and text.endswith('...')
  assert len(text) == len('str ') + 40
