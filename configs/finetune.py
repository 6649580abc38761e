r"""Fine-tuning: classification, pairs, tagging, relations, span QA.

  python -m bert_jax.main --config=configs/finetune.py:drug_reviews \
      --config.loss.name=focal --config.loss.gamma=2 --workdir=/tmp/ft

Your own files: `<arg>` is a task and `config.data.train` / `.eval` name the
files (the format comes from the extension, see `bert_jax/data/datasets.py`):

  python -m bert_jax.main --config=configs/finetune.py:classification \
      --config.data.train=train.tsv --config.data.eval=dev.tsv --workdir=/tmp/ft

  classification       TSV/CSV with a header, or JSONL: fields `text`, `label`
  pair_classification  the same with `text`, `text_pair`, `label`
  tagging              CoNLL: token in the first column, tag in the last,
                       blank line between sentences; scheme `auto` (IOB2,
                       BIOES or BMES, from the tags)
  span_qa              SQuAD v1.1 JSON (v2.0 files: also
                       --config.data.version_2_with_negative=True)
  relation             JSONL `{"tokens": [...], "head": [s, e], "tail": [s, e],
                       "relation": ...}` (half-open word spans); SemEval-2010
                       Task 8 files: the `semeval` preset
Other field names: `--config.data.reader_options.text_field=review` (and
`label_field`, `text_pair_field`, `tag_column`, ...: the reader's keyword
arguments). A bad record stops the run with its file, line and field;
`--config.data.on_error=skip` drops and counts such records instead.
Every task preset starts from MiniLM (`config.model.init_from='minilm'`) with
the learning rate and epochs in PRESETS, measured on the registry data of
that task family (the figures are in the comments; relation: unmeasured).

Every preset (dataset or task) cuts each batch to the smallest of
`config.data.length_bucket_count` equal steps of `max_seq_length` that holds
its longest example (one compiled step per bucket). Padding is masked, so
this changes the cost, not the result (tests/test_length_bucketing.py);
`--config.data.length_bucket_count=0` turns it off, and
`--config.data.length_buckets=(64,128)` sets the buckets by hand.
Every other field can be overridden the same way.
"""

import ml_collections

from configs import common

PRESETS = {
    # name: (task, train data, train split, eval split, max_seq_length, epochs
    #        [, lr]); the learning rate defaults to DEFAULT_LR.
    # ---- Task presets for your own files (config.data.train / .eval).
    # lr and epochs are those measured on the registry data of the family,
    # all from MiniLM (experiments/results/finetune/README.md):
    # drug_reviews: acc 0.702, macro-F1 0.455 (lr 5e-5 x 3 collapsed to the
    # majority class, macro-F1 0.264).
    'classification': ('classification', '', 'train', 'eval', 256, 5, 2e-4),
    # BoolQ, 2,000 training pairs: acc 0.630, macro-F1 0.535.
    'pair_classification': ('classification', '', 'train', 'eval', 256, 2, 1e-4),
    # conll_sample, 180 training sentences: strict span F1 0.889.
    'tagging': ('tagging', '', 'train', 'eval', 128, 10, 1e-4),
    # disfl_qa, 800 questions: F1 26.8 (5e-5 x 3 abstained on every question).
    'span_qa': ('span_qa', '', 'train', 'eval', 384, 5, 1e-4),
    # No relation data ships here: the semeval preset's settings, unmeasured.
    'relation': ('relation', '', 'train', 'eval', 128, 5, 5e-5),
    # ---- Dataset presets.
    # Measured on CPU: lr 5e-5 x 3 epochs collapsed MiniLM to the majority
    # class (macro-F1 0.26); lr 2e-4 x 5 epochs gave acc 0.702, macro-F1 0.455.
    'drug_reviews': ('classification', 'drug_reviews', 'train', 'test', 256, 5,
                     2e-4),
    'spam_assassin': ('classification', 'spam_assassin', 'train', 'test', 256, 2),
    'bbc_topics': ('classification', 'bbc_topics', 'train', 'test', 256, 2),
    'boolq': ('classification', 'boolq', 'train', 'dev', 256, 1),
    # Span QA; `squad` needs config.data.train / .eval = SQuAD JSON paths
    # (v2.0 files: also --config.data.version_2_with_negative=True).
    'disfl_qa': ('span_qa', 'disfl_qa', 'train', 'dev', 256, 3),
    'squad': ('span_qa', '', 'train', 'dev', 384, 2),
    # Tagging. msra_ner: Chinese BMES NER on a small BERT trained from scratch
    # with the bert-base-chinese vocab (no Chinese weights ship here);
    # conll_sample: English IOB2 NER from MiniLM.
    'msra_ner': ('tagging', 'msra_ner', 'train', 'test', 128, 3),
    'conll_sample': ('tagging', 'conll_sample', 'train', 'test', 128, 10, 1e-4),
    # POS (scheme 'none'): the CoNLL sample's POS column, and 1,000 WSJ
    # sentences of the Penn Treebank; both from MiniLM.
    'conll_pos': ('tagging', 'conll_sample', 'train', 'test', 128, 10, 1e-4),
    'wsj_pos': ('tagging', 'wsj_pos', 'train', 'test', 128, 5),
    # Cantonese word segmentation (seg_BMES) and POS on HKCanCor, a small
    # BERT from scratch with the bert-base-chinese vocab, as msra_ner.
    'hkcancor_cws': ('tagging', 'hkcancor_cws', 'train', 'test', 128, 3),
    'hkcancor_pos': ('tagging', 'hkcancor_pos', 'train', 'test', 128, 3),
    # Relation classification; no relation data ships here: set
    # config.data.train / .eval to SemEval-2010 Task 8 files (TRAIN_FILE.TXT,
    # TEST_FILE_FULL.TXT), or to relation JSONL files with
    # --config.data.reader_options.format=relation_jsonl.
    'semeval': ('relation', '', 'train', 'test', 128, 5),
    # Multi-label classification (bert_jax/tasks/multilabel.py): your own
    # files, --config.data.train=train.jsonl --config.data.eval=dev.jsonl
    # (JSONL {"text", "labels": [...]}, or TSV/CSV with a `labels` column
    # like a|b); or the registered toxicity_prompts (splits train/dev/test).
    'multilabel': ('multilabel', '', 'train', 'test', 128, 5),
}
DEFAULT_LR = 5e-5


def loss_config(name: str = 'ce', **hparams) -> ml_collections.ConfigDict:
  """config.loss: `name` plus the hyperparameters given.

  A free-form section: `--config.loss.<key>=<value>` may add any key, and
  `losses.from_config` validates them when the run starts (an unknown key
  is an error naming it and the loss's valid keys).
  """
  return ml_collections.ConfigDict(dict(name=name, **hparams))


def get_config(arg: str = 'drug_reviews') -> ml_collections.ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f'configs/finetune.py:{arg}: unknown preset; known: '
                     f'{sorted(PRESETS)}')
  task, train, train_split, eval_split, max_len, epochs, *lr = PRESETS[arg]
  c = common.base_config()
  c.task = task
  c.model.init_from = 'minilm'
  c.data = ml_collections.ConfigDict(dict(
      train=train, eval='', train_split=train_split, eval_split=eval_split,
      split_seed=0, vocab='', max_seq_length=max_len, on_error='raise',
      sampling_q=ml_collections.FieldReference(None, field_type=float),
      max_train_examples=0, max_eval_examples=0,   # 0: all; N: a seeded sample of N
      # f > 0: hold a stratified fraction f of train out of training; with
      # eval_split='dev_from_train' evaluate on it (finetune.load_split).
      dev_from_train=0.0,
      # Length bucketing: batches cut to the smallest of these lengths that
      # holds their longest example (one compiled step per bucket; () off);
      # group_by_length also batches examples of similar length together.
      # length_bucket_count: the default buckets are the multiples of
      # max_seq_length / count; length_buckets, when set, replace them.
      length_buckets=(), length_bucket_count=4, group_by_length=False,
      reader_options=ml_collections.ConfigDict()))
  c.data.reader_options.unlock()   # free-form kwargs for local-file readers
  c.loss = loss_config('ce')
  c.pooling = 'pooler'
  c.eval_logit_adjustment_tau = 0.0
  c.num_epochs = float(epochs)
  c.total_steps = -1                # -1: from num_epochs and the train size
  c.batch_size = 16
  c.eval_batch_size = 32
  c.optim.update(name='adamw', lr=lr[0] if lr else DEFAULT_LR,
                 weight_decay=0.01, warmup_fraction=0.1, decay='linear',
                 clip_global_norm=1.0)
  if arg == 'pair_classification':
    c.data.reader_options.text_pair_field = 'text_pair'
  c.log_every = 10
  c.eval_every = 0                  # 0: evaluate at the end only
  c.checkpoint_every = 1000
  c.best_metric = 'macro_f1'
  if task == 'span_qa':
    _span_qa(c, arg)
  elif task == 'tagging':
    _tagging(c, arg)
  elif task == 'relation':
    _relation(c, arg)
  elif task == 'multilabel':
    _multilabel(c)
  return c


def _multilabel(c: ml_collections.ConfigDict) -> None:
  """Multi-label fields (bert_jax/tasks/multilabel.py). Local files read
  fields `text` (and `text_pair`) and `labels` unless
  config.data.reader_options says otherwise (text_field, label_field,
  label_separator='|', ...)."""
  c.loss = loss_config('bce')       # or sigmoid_focal | sigmoid_ghm |
                                    # multilabel_ce | dice | tversky | dsc
  c.data.labels = ()                # () : the training labels, sorted
  c.data.allow_empty_labels = True  # [] = "no label applies"
  c.multilabel_threshold = 0.0      # predict z > this (logit; 0 = p 0.5)
  c.best_metric = 'macro_f1'
  c.optim.lr = 1e-4


def _span_qa(c: ml_collections.ConfigDict, arg: str) -> None:
  """Span QA fields (bert_jax/tasks/span_qa.py); google-research/bert's
  SQuAD defaults except where noted."""
  c.data.doc_stride = 128           # window advance, in passage tokens
  c.data.max_query_length = 64
  c.data.version_2_with_negative = arg == 'disfl_qa'   # Disfl-QA: 'unknown'
  c.n_best_size = 20
  c.max_answer_length = 30
  c.null_score_diff_threshold = 0.0
  c.best_metric = 'f1'
  if arg == 'squad':
    c.optim.lr = 3e-5
    c.batch_size = 32


def _tagging(c: ml_collections.ConfigDict, arg: str) -> None:
  """Token tagging fields (bert_jax/tasks/tagging.py)."""
  c.data.scheme = {'msra_ner': 'BMES', 'conll_sample': 'IOB2',
                   'conll_pos': 'none', 'wsj_pos': 'none',
                   'hkcancor_cws': 'seg_BMES',
                   'hkcancor_pos': 'none'}.get(arg, 'auto')
  c.data.max_train_examples = 0     # 0: all; N: a seeded sample of N
  c.data.max_eval_examples = 0
  c.data.ill_formed_tags = 'count'  # gold that breaks the scheme: | 'raise'
  c.crf = False                     # linear-chain CRF over word emissions
  c.crf_constrained = True          # Viterbi never decodes what the scheme forbids
  c.crf_emission_loss_weight = 0.0  # > 0: adds config.loss on the emissions
  c.best_metric = {'conll_pos': 'token_accuracy', 'wsj_pos': 'token_accuracy',
                   'hkcancor_cws': 'seg_f1',
                   'hkcancor_pos': 'token_accuracy'}.get(arg, 'span_f1')
  if arg == 'conll_pos':
    c.data.reader_options.column = 'pos'
  if arg in ('msra_ner', 'hkcancor_cws', 'hkcancor_pos'):
    # No Chinese BERT weights are available, so a small BERT starts from
    # scratch with the bert-base-chinese vocab (a registry name, fetched when
    # the run starts). To start from a Chinese encoder instead, set
    # --config.model.init_from to its HF directory (e.g. a bert_jax
    # pretraining run on the msra corpus with this vocab, exported with
    # hf_weights.export_hf).
    c.data.vocab = 'bert_chinese_vocab'
    c.model.init_from = ''
    c.model.update(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                   intermediate_size=1024)
    # configs/pretrain.py:chinese_msra has these sizes; an encoder with
    # others needs them taken back (--config.model.hidden_size=None ...).
    c.batch_size = 32
    c.optim.update(lr=5e-4, warmup_fraction=0.1)


def _relation(c: ml_collections.ConfigDict, arg: str) -> None:
  """Relation classification fields (bert_jax/tasks/relation.py)."""
  c.relation_method = 'entity_markers'  # | entity_pool | entity_embeddings
  c.other_label = ''                # '' : 'Other' or 'no_relation' if present
  c.data.entity_truncation = 'skip'  # or 'raise' when an entity is cut off
  c.data.max_train_examples = 0
  c.data.max_eval_examples = 0
  # SemEval files end in .TXT, which would be read as CoNLL; the task
  # preset reads JSONL with word spans (.jsonl alone reads classification).
  c.data.reader_options.format = 'relation_jsonl' if arg == 'relation' else 'semeval'
  c.best_metric = 'macro_f1_excl_other'
