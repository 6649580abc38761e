r"""Non-BERT baselines on the registered data sets, for the recorded results.

  python -m experiments.baselines [--datasets=drug_reviews,spam_assassin,...] [--out=FILE]
      [--max_train_examples=N] [--max_eval_examples=N] [--eval_split=test]

Each baseline is fit on the same train split and scored on the same eval
split as the BERT runs of `configs/finetune.py` (the same seeded subsets
with --max_{train,eval}_examples, as config.data.max_{train,eval}_examples
gives a BERT run), with the project's metrics:
  classification and pairs: TF-IDF (word 1-2 grams) + logistic regression;
  tagging: most frequent tag per word (seen in training; 'O' otherwise);
  POS (scheme 'none'): most frequent tag per word, unknown words the most
    frequent tag overall;
  word segmentation: forward maximum matching with the training words;
  span QA: the empty answer and the first sentence of the passage.
Needs scikit-learn (in the `test` extra).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np

from bert_jax import metrics
from bert_jax.data import datasets
from bert_jax.tasks import finetune as finetune_task
from bert_jax.tasks import span_qa
from configs import finetune

DEFAULT = ('drug_reviews', 'spam_assassin', 'boolq', 'conll_sample',
           'msra_ner', 'disfl_qa')


def _splits(name: str, max_train: int = 0, max_eval: int = 0,
            eval_split: str = ''):
  """The preset's train and eval splits, loaded as a BERT run loads them."""
  c = finetune.get_config(name)
  c.data.eval_split = eval_split or c.data.eval_split
  c.data.max_train_examples = max_train
  c.data.max_eval_examples = max_eval
  return (finetune_task.load_split(c, 'train'),
          finetune_task.load_split(c, 'eval'))


def tfidf_logreg(train, evaluation, seed: int = 0) -> dict:
  """TF-IDF + logistic regression; a pair is 'text [SEP] text_pair'."""
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  join = lambda e: e.text if e.text_pair is None else f'{e.text} [SEP] {e.text_pair}'
  names = list(train.label_names)
  index = {n: i for i, n in enumerate(names)}
  vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
  x_train = vec.fit_transform([join(e) for e in train.examples])
  x_eval = vec.transform([join(e) for e in evaluation.examples])
  y_train = np.array([index[e.label] for e in train.examples])
  y_eval = np.array([index[e.label] for e in evaluation.examples])
  clf = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
  clf.fit(x_train, y_train)
  m = metrics.classification_metrics(clf.predict(x_eval), y_eval, len(names),
                                     class_names=names)
  rarest = names[int(np.argmin(datasets.class_counts(train)))]
  return dict(baseline='tfidf_logreg', accuracy=m['accuracy'],
              macro_f1=m['macro_f1'], minority_class=rarest,
              minority_f1=m['per_class'][rarest]['f1'],
              per_class_f1={n: v['f1'] for n, v in m['per_class'].items()})


def most_frequent_tag(train, evaluation, scheme: str) -> dict:
  counts = collections.defaultdict(collections.Counter)
  for e in train.examples:
    for w, t in zip(e.words, e.tags):
      counts[w][t] += 1
  best = {w: c.most_common(1)[0][0] for w, c in counts.items()}
  gold = [list(e.tags) for e in evaluation.examples]
  pred = [[best.get(w, 'O') for w in e.words] for e in evaluation.examples]
  m = metrics.span_f1(gold, pred, scheme)
  return dict(baseline='most_frequent_tag', span_f1=m['micro_f1'],
              per_type_f1={k: v['f1'] for k, v in m['per_type'].items()})


def most_frequent_pos(train, evaluation) -> dict:
  """Per word its most frequent training tag; unknown words the most
  frequent tag overall. Scored with token accuracy and per-tag / macro F1."""
  counts = collections.defaultdict(collections.Counter)
  overall = collections.Counter()
  for e in train.examples:
    for w, t in zip(e.words, e.tags):
      counts[w][t] += 1
      overall[t] += 1
  # Ties go to the alphabetically first tag, so the result is deterministic.
  pick = lambda c: min(c, key=lambda t: (-c[t], t))
  best = {w: pick(c) for w, c in counts.items()}
  default = pick(overall)
  gold = [list(e.tags) for e in evaluation.examples]
  pred = [[best.get(w, default) for w in e.words] for e in evaluation.examples]
  names = sorted({t for s in gold + pred for t in s})
  m = metrics.tag_classification_metrics(gold, pred, names)
  return dict(baseline='most_frequent_tag', token_accuracy=m['accuracy'],
              macro_f1=m['macro_f1'], weighted_f1=m['weighted_f1'])


def forward_max_match(chars, vocabulary, max_word_length: int) -> list[int]:
  """Forward maximum matching: word lengths of `chars`, left to right.

  At each position the longest string of at most `max_word_length`
  characters that is in `vocabulary` is taken as a word; a character that
  starts no known word is a word of its own.
  """
  lengths, i = [], 0
  while i < len(chars):
    for n in range(min(max_word_length, len(chars) - i), 0, -1):
      if n == 1 or ''.join(chars[i:i + n]) in vocabulary:
        lengths.append(n)
        i += n
        break
  return lengths


def bmes(lengths) -> list[str]:
  """Word lengths -> bare B/M/E/S tags."""
  out = []
  for n in lengths:
    out.extend(['S'] if n == 1 else ['B'] + ['M'] * (n - 2) + ['E'])
  return out


def fmm_segmentation(train, evaluation, scheme: str = 'BMES') -> dict:
  """Forward maximum matching with the training words (SIGHAN scoring)."""
  vocabulary = set()
  for e in train.examples:
    for s, t in metrics.segment_words(e.tags, scheme):
      vocabulary.add(''.join(e.words[s:t]))
  longest = max(len(w) for w in vocabulary)
  gold = [list(e.tags) for e in evaluation.examples]
  pred = [bmes(forward_max_match(e.words, vocabulary, longest))
          for e in evaluation.examples]
  m = metrics.segmentation_scores(gold, pred, 'BMES', [e.words for e in
                                                       evaluation.examples],
                                  vocabulary)
  return dict(baseline='forward_max_match', seg_precision=m['precision'],
              seg_recall=m['recall'], seg_f1=m['f1'],
              iv_recall=m['iv_recall'], oov_recall=m['oov_recall'],
              oov_rate=m['oov_rate'])


def run(name: str, max_train: int = 0, max_eval: int = 0,
        eval_split: str = '') -> dict:
  train, evaluation = _splits(name, max_train, max_eval, eval_split)
  if train.task_kind == 'classification':
    out = tfidf_logreg(train, evaluation)
  elif train.task_kind == 'tagging':
    scheme = finetune.get_config(name).data.scheme
    if scheme == 'none':
      out = most_frequent_pos(train, evaluation)
    elif scheme.startswith('seg_'):
      if scheme != 'seg_BMES':
        raise ValueError(f'{name}: the segmentation baseline writes BMES tags, '
                         f'not {scheme}')
      out = fmm_segmentation(train, evaluation)
    else:
      out = most_frequent_tag(train, evaluation, scheme)
  elif train.task_kind == 'qa':
    out = dict(empty=span_qa.empty_answer_baseline(evaluation.examples),
               first_sentence=span_qa.first_sentence_baseline(evaluation.examples))
  else:
    raise ValueError(f'no baseline for {train.task_kind}')
  return dict(dataset=name, train=len(train), eval=len(evaluation),
              eval_split=evaluation.split, **out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m experiments.baselines')
  p.add_argument('--datasets', default=','.join(DEFAULT))
  p.add_argument('--out', default='')
  p.add_argument('--max_train_examples', type=int, default=0,
                 help='a seeded sample of N training examples (0: all)')
  p.add_argument('--max_eval_examples', type=int, default=0,
                 help='a seeded sample of N eval examples (0: all)')
  p.add_argument('--eval_split', default='',
                 help="score on this split instead of the preset's")
  args = p.parse_args(argv)
  rows = [run(n, args.max_train_examples, args.max_eval_examples,
              args.eval_split)
          for n in args.datasets.split(',') if n]
  text = json.dumps(rows, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
