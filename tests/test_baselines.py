"""experiments/baselines.py: the non-BERT baselines of the recorded results."""

import pytest

from bert_jax.data import datasets
from bert_jax.data import examples as ex
from bert_jax.data import readers
from experiments import baselines

pytest.importorskip('sklearn')


def _ds(examples, labels=()):
  kind = ('tagging' if isinstance(examples[0], ex.TaggingExample)
          else 'classification')
  return datasets.Dataset('test', 'train', tuple(examples), tuple(labels), kind,
                          readers.ReadReport(source='test'))


def test_most_frequent_tag_by_hand():
  train = _ds([ex.TaggingExample('a', ('Paris', 'is', 'big'), ('B-LOC', 'O', 'O')),
               ex.TaggingExample('b', ('Paris', 'Hilton'), ('B-PER', 'I-PER')),
               ex.TaggingExample('c', ('Paris', 'again'), ('B-LOC', 'O'))])
  # 'Paris' -> B-LOC (2 of 3); 'Hilton' -> I-PER; unseen 'Rome' -> O.
  evaluation = _ds([ex.TaggingExample('d', ('Paris', 'Hilton', 'Rome'),
                                      ('B-PER', 'I-PER', 'B-LOC'))])
  out = baselines.most_frequent_tag(train, evaluation, 'IOB2')
  # Predicted: B-LOC (a LOC span [0,1)) and a stray I-PER (strict mode: no
  # entity); gold: PER [0,2) and LOC [2,3): no true positive.
  assert out['span_f1'] == 0.0
  evaluation = _ds([ex.TaggingExample('e', ('Paris', 'is'), ('B-LOC', 'O'))])
  assert baselines.most_frequent_tag(train, evaluation, 'IOB2')['span_f1'] == 1.0


def test_tfidf_logreg_separable_and_minority():
  words = {'spam': 'win money prize now', 'ham': 'meeting agenda notes today'}
  train = [ex.ClassificationExample(f'{c}{i}', f'{words[c]} {i}', label=c)
           for c, n in (('ham', 12), ('spam', 4)) for i in range(n)]
  evaluation = [ex.ClassificationExample(f'e{c}', words[c], label=c)
                for c in ('ham', 'spam')]
  out = baselines.tfidf_logreg(_ds(train, ('ham', 'spam')),
                               _ds(evaluation, ('ham', 'spam')))
  assert out['accuracy'] == 1.0 and out['macro_f1'] == 1.0
  assert out['minority_class'] == 'spam' and out['minority_f1'] == 1.0


def test_subsets_are_the_examples_a_bert_run_sees():
  from bert_jax.tasks import finetune as finetune_task  # pylint: disable=g-import-not-at-top
  from configs import finetune  # pylint: disable=g-import-not-at-top
  row = baselines.run('spam_assassin', max_train=300, max_eval=50)
  assert row['train'] == 300 and row['eval'] == 50
  c = finetune.get_config('spam_assassin')
  c.data.max_train_examples = 300
  sub_train, _ = baselines._splits('spam_assassin', 300, 50)  # pylint: disable=protected-access
  assert sub_train.examples == finetune_task.load_split(c, 'train').examples
  # A sample, not a prefix: the split lists all its ham first.
  assert {e.label for e in sub_train.examples} == {'ham', 'spam'}


def test_eval_split_override():
  row = baselines.run('disfl_qa', eval_split='test')
  assert row['eval_split'] == 'test' and row['eval'] == 99
  # Every unanswerable question and nothing else is right for the empty answer.
  empty = row['empty']
  assert empty['exact_match'] == pytest.approx(100 * empty['no_ans_total'] / 99)


def test_forward_max_match_by_hand():
  vocab = {'北京', '北京大学', '大学', '学生', '生活'}
  # Longest match first: 北京大学 | 生活 ; 学生 is never reached.
  assert baselines.forward_max_match(list('北京大学生活'), vocab, 4) == [4, 2]
  # Unknown characters are words of their own; max length bounds the match.
  assert baselines.forward_max_match(list('我北京大学'), vocab, 2) == [1, 2, 2]
  assert baselines.bmes([1, 3, 2]) == ['S', 'B', 'M', 'E', 'B', 'E']
  train = _ds([ex.TaggingExample('a', tuple('北京大学'), tuple('BMME')),
               ex.TaggingExample('b', tuple('大学生活'), tuple('BEBE'))])
  # Vocabulary 北京大学, 大学, 生活 -> 北京大学生活 is 北京大学|生活; gold
  # 北京|大学|生活: 1 of 3 gold words right, 1 of 2 predicted.
  evaluation = _ds([ex.TaggingExample('c', tuple('北京大学生活'),
                                      tuple('BEBEBE'))])
  out = baselines.fmm_segmentation(train, evaluation)
  assert out['seg_precision'] == pytest.approx(1 / 2)
  assert out['seg_recall'] == pytest.approx(1 / 3)
  assert out['oov_rate'] == pytest.approx(1 / 3)       # 北京 is OOV
  assert out['oov_recall'] == 0.0


def test_most_frequent_pos_by_hand():
  train = _ds([ex.TaggingExample('a', ('the', 'run'), ('DT', 'NN')),
               ex.TaggingExample('b', ('we', 'run', 'run'), ('PRP', 'VBP', 'VBP'))])
  # run -> VBP (2 of 3); unseen 'dogs' -> VBP, the most frequent tag overall.
  evaluation = _ds([ex.TaggingExample('c', ('the', 'run', 'dogs'),
                                      ('DT', 'VBP', 'NNS'))])
  out = baselines.most_frequent_pos(train, evaluation)
  assert out['token_accuracy'] == pytest.approx(2 / 3)
