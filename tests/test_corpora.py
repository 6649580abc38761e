"""Tests for bert_jax.data.corpora: sentence splitting and corpus readers."""

import pytest

from bert_jax.data import corpora


# --------------------------------------------------------------------------
# Sentence splitter.
# --------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    # Titles and initials never end a sentence.
    ('Mr. Smith went to Washington. He arrived on Monday.',
     ['Mr. Smith went to Washington.', 'He arrived on Monday.']),
    ('Dr. J. R. Oppenheimer spoke. Mrs. Jones listened.',
     ['Dr. J. R. Oppenheimer spoke.', 'Mrs. Jones listened.']),
    ('President John F. Kennedy said so.',
     ['President John F. Kennedy said so.']),
    # Decimals and amounts.
    ('Growth was 3.5 percent. It cost $1.13bn last year.',
     ['Growth was 3.5 percent.', 'It cost $1.13bn last year.']),
    # Dotted acronyms: a boundary only before a sentence opener.
    ('The U.S. Army is large. We thank the U.S. The end.',
     ['The U.S. Army is large.', 'We thank the U.S.', 'The end.']),
    ('Washington, D.C. is the capital.', ['Washington, D.C. is the capital.']),
    ('We met at 5 p.m. yesterday. It rained.',
     ['We met at 5 p.m. yesterday.', 'It rained.']),
    ('Fruit, e.g. apples, is good. Eat it.',
     ['Fruit, e.g. apples, is good.', 'Eat it.']),
    # "No." before a number vs. the word "no".
    ('See No. 5 for details. I said no. The rest.',
     ['See No. 5 for details.', 'I said no.', 'The rest.']),
    ('Apples, pears, etc. are fruit. We sell fruit, etc. The end.',
     ['Apples, pears, etc. are fruit.', 'We sell fruit, etc.', 'The end.']),
    # Quotes, brackets, ! ? and ellipses.
    ('"Why?" he asked. "Because!" She left... Then quiet.',
     ['"Why?" he asked.', '"Because!"', 'She left...', 'Then quiet.']),
    ('Thank you. (Applause.) Thank you.',
     ['Thank you.', '(Applause.)', 'Thank you.']),
    # Newlines always separate.
    ('Line one\nLine two. Sentence three.\n\n',
     ['Line one', 'Line two.', 'Sentence three.']),
    # Chinese: 。！？ end sentences without spaces, closing quotes stay.
    ('今天天气很好。我们去公园吧！你去吗？好的。',
     ['今天天气很好。', '我们去公园吧！', '你去吗？', '好的。']),
    ('他说：“我来了。”然后走了。', ['他说：“我来了。”', '然后走了。']),
    ('你好吗?我很好', ['你好吗?', '我很好']),
    ('', []),
    ('   \n  ', []),
])
def test_split_sentences(text, expected):
  assert corpora.split_sentences(text) == expected


def test_split_sentences_deterministic_and_lossless():
  text = ('In 1990 the U.S. economy grew 2.5 percent. Mr. Bush said so! '
          'Did it? 经济增长了。很好！') * 3
  a = corpora.split_sentences(text)
  assert a == corpora.split_sentences(text)
  # Only whitespace between sentences is dropped.
  assert ''.join(a).replace(' ', '') == text.replace(' ', '')
  assert len(a) == 15


# --------------------------------------------------------------------------
# Real corpora.
# --------------------------------------------------------------------------


def test_sotu():
  stats = corpora.LoadStats()
  docs = list(corpora.load_documents('sotu', stats=stats))
  assert len(docs) == 233 == stats.documents
  assert stats.skipped_empty == 0
  assert stats.sentences == sum(len(d) for d in docs)
  # Sentence lengths: some splitting happened, nothing is empty.
  assert stats.sentences > 50 * 233
  assert all(s and s == s.strip() for d in docs for s in d)
  assert docs[0][0].startswith('Fellow-Citizens of the Senate')
  assert docs[0][0].endswith('public affairs.')


def test_bbc():
  stats = corpora.LoadStats()
  docs = list(corpora.load_documents('bbc', stats=stats))
  assert len(docs) == 2225
  # sports/199.txt is Windows-1252 in the packaged copy.
  assert stats.fallback_decoded == 1
  assert docs[0][0] == 'Ad sales boost Time Warner profit'  # The title line.
  assert any('£' in s for d in docs for s in d)


def test_msra():
  docs = list(corpora.load_documents('msra'))
  assert len(docs) == 5029  # 50,289 sentences in tens.
  assert all(len(d) == corpora.MSRA_SENTENCES_PER_DOCUMENT for d in docs[:-1])
  assert len(docs[-1]) == 9
  assert docs[0][0] == ('当希望工程救助的百万儿童成长起来，科教兴国蔚然成风时，'
                        '今天有收藏价值的书你没买，明日就叫你悔不当初！')
  assert not any(' ' in s for s in docs[0])


@pytest.mark.parametrize('spec, num_shards', [('sotu', 3), ('msra', 4)])
def test_sharding_disjoint_and_complete(spec, num_shards):
  everything = list(corpora.load_documents(spec))
  shards = [list(corpora.load_documents(spec, shard_index=i,
                                        num_shards=num_shards))
            for i in range(num_shards)]
  # Document i goes to shard i % num_shards, in order.
  for i, shard in enumerate(shards):
    assert shard == everything[i::num_shards]
  assert sum(len(s) for s in shards) == len(everything)


def test_bad_shard_index():
  with pytest.raises(ValueError):
    next(corpora.load_documents('sotu', shard_index=2, num_shards=2))


# --------------------------------------------------------------------------
# Path corpora.
# --------------------------------------------------------------------------


@pytest.fixture
def text_dir(tmp_path):
  (tmp_path / 'a.txt').write_text(
      'First doc. Second sentence.\nThird line\n\n\nSecond doc here.\n\n',
      encoding='utf-8')
  (tmp_path / 'b.txt').write_text('', encoding='utf-8')
  sub = tmp_path / 'sub'
  sub.mkdir()
  (sub / 'c.txt').write_text('Third doc! Really?\n\nFourth doc。第五句。',
                             encoding='utf-8')
  (tmp_path / 'ignored.md').write_text('Not a txt file.', encoding='utf-8')
  return tmp_path


def test_path_bert_layout(text_dir):
  stats = corpora.LoadStats()
  docs = list(corpora.load_documents(str(text_dir), stats=stats))
  assert docs == [
      ['First doc.', 'Second sentence.', 'Third line'],
      ['Second doc here.'],
      ['Third doc!', 'Really?'],
      ['Fourth doc。', '第五句。'],
  ]
  assert stats.skipped_empty == 1  # b.txt
  assert stats.documents == 4


def test_path_file_layout_and_glob(text_dir):
  stats = corpora.LoadStats()
  docs = list(corpora.load_documents(str(text_dir), layout='file',
                                     stats=stats))
  assert docs == [
      ['First doc.', 'Second sentence.', 'Third line', 'Second doc here.'],
      ['Third doc!', 'Really?', 'Fourth doc。', '第五句。'],
  ]
  assert stats.skipped_empty == 1
  globbed = list(corpora.load_documents(str(text_dir / '*.txt')))
  assert globbed == [['First doc.', 'Second sentence.', 'Third line'],
                     ['Second doc here.']]
  single = list(corpora.load_documents(str(text_dir / 'sub' / 'c.txt')))
  assert len(single) == 2


@pytest.mark.parametrize('layout', ['bert', 'file'])
def test_path_sharding(text_dir, layout):
  everything = list(corpora.load_documents(str(text_dir), layout=layout))
  for n in (2, 3):
    shards = [list(corpora.load_documents(str(text_dir), layout=layout,
                                          shard_index=i, num_shards=n))
              for i in range(n)]
    flat = [d for s in shards for d in s]
    assert sorted(map(tuple, flat)) == sorted(map(tuple, everything))
    assert len(flat) == len(everything)


def test_undecodable_file_is_an_error_naming_it(tmp_path):
  (tmp_path / 'good.txt').write_text('Fine.', encoding='utf-8')
  bad = tmp_path / 'bad.txt'
  bad.write_bytes('Price: £5.'.encode('cp1252'))
  with pytest.raises(corpora.CorpusDecodeError, match='bad.txt'):
    list(corpora.load_documents(str(tmp_path)))
  stats = corpora.LoadStats()
  docs = list(corpora.load_documents(str(tmp_path), fallback_encoding='cp1252',
                                     stats=stats))
  assert docs == [['Price: £5.'], ['Fine.']]
  assert stats.fallback_decoded == 1


def test_missing_path():
  with pytest.raises(FileNotFoundError):
    list(corpora.load_documents('/nonexistent/dir/*.txt'))


def test_tfds_not_prepared(tmp_path, monkeypatch):
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  with pytest.raises(corpora.CorpusNotPreparedError, match='data_dir'):
    list(corpora.load_documents('tfds:wikipedia/20230601.en'))
  with pytest.raises(corpora.CorpusNotPreparedError,
                     match=r'not prepared under .*tfds build wikipedia'):
    list(corpora.load_documents('tfds:wikipedia/20230601.en',
                                tfds_data_dir=str(tmp_path / 'data')))


def test_deterministic():
  a = list(corpora.load_documents('bbc', shard_index=1, num_shards=7))
  b = list(corpora.load_documents('bbc', shard_index=1, num_shards=7))
  assert a == b and len(a) == len(range(1, 2225, 7))


@pytest.mark.parametrize('file_format', ['array_record', 'tfrecord'])
def test_tfds_prepared_corpus_reads_every_record_once(tmp_path, file_format):
  """A TFDS dataset prepared elsewhere (its builder code not importable
  here), in either file format: every record read once over the shards,
  split into the same sentences as the raw text."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run(
      [sys.executable, str(root / 'tests' / 'tfds_build_probe.py'),
       str(tmp_path / 'data'), file_format, str(tmp_path / 'texts.json')],
      capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL='2'),
      timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  texts = json.loads((tmp_path / 'texts.json').read_text())
  assert list((tmp_path / 'data').glob(f'sotu_probe/1.0.0/*.{file_format}*'))
  expected = sorted(tuple(corpora.split_sentences(t)) for t in texts)
  assert len(expected) == 6 and all(len(d) > 20 for d in expected)
  shards = []
  for shard in range(3):
    stats = corpora.LoadStats()
    shards.append([tuple(d) for d in corpora.load_documents(
        'tfds:sotu_probe', shard_index=shard, num_shards=3,
        tfds_data_dir=str(tmp_path / 'data'), stats=stats)])
    assert stats.documents == len(shards[-1]) == 2
  assert sorted(d for s in shards for d in s) == expected
  # Same order on a second read (deterministic), and a wrong split is an
  # error that names it, not an empty corpus.
  assert [tuple(d) for d in corpora.load_documents(
      'tfds:sotu_probe', shard_index=1, num_shards=3,
      tfds_data_dir=str(tmp_path / 'data'))] == shards[1]
  with pytest.raises(Exception, match='validation'):
    list(corpora.load_documents('tfds:sotu_probe', tfds_split='validation',
                                tfds_data_dir=str(tmp_path / 'data')))
