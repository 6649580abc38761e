r"""Loss ablation: every imbalanced-class loss against cross-entropy, 3 seeds.

  python -m experiments.sweep --config=configs/ablation.py:drug_reviews \
      --workdir=workdirs/ablation_drug_reviews --parallel=2
  python -m experiments.report workdirs/ablation_drug_reviews

`<arg>` is a comma-separated list (big_vision style): a `configs/finetune.py`
preset (`drug_reviews`, `spam_assassin`, `msra_ner`, ...), then optional
words and `key=value` items:
  smoke         a tiny random-init BERT (MiniLM vocab), 100 steps, seeds 0, 1:
                the same sweep, checking the plumbing in minutes on 2 CPU cores.
  seeds=N       the first N of the seeds 0, 1, 2 (default 3; smoke 2).
  variants=a+b  only these loss variants (names of VARIANTS below).
  max_len=N     config.data.max_seq_length (shorter: cheaper runs).
  train_examples=N, eval_examples=N
                a sample of N examples (seeded by data.split_seed)
                (config.data.max_{train,eval}_examples): subsets for the
                CPU budget, said in the report.
  epochs=X      config.num_epochs.
  lr=X          config.optim.lr (the same for every variant).
  init_from=DIR config.model.init_from, e.g. the `hf` export of
                `configs/pretrain.py:chinese_msra` for msra_ner.
Every run but smoke ones cuts its batches to length buckets (`data.length_buckets`: each
batch as wide as its longest example rounded up to a multiple of
max_len / 4), which changes the cost, not the result; batches are not
grouped by length, so every variant (q-power sampling included) sees the
same kind of batches.
`get_config(arg)` builds one run's base config; `sweep(add, arg)` calls
`add(**overrides)` once per run. `sweep` takes `arg` as its second parameter
(big_vision's `sweep(add)` cannot see it; `experiments.sweep` passes it to a
`sweep` that has two parameters), so a smoke or single-seed sweep is the
same file with another arg. The same arg reaches `get_config` in every run.
"""

import types

import ml_collections

from configs import finetune

SEEDS = (0, 1, 2)

# Loss variants: name -> overrides. Hyperparameters are written out even where
# they equal the registry defaults, so the report's row labels say what ran.
VARIANTS = {
    'ce': {'loss.name': 'ce'},
    'weighted_ce': {'loss.name': 'weighted_ce', 'loss.alpha': 'inverse_freq'},
    'class_balanced_ce': {'loss.name': 'class_balanced_ce', 'loss.beta': 0.999},
    'focal_g1': {'loss.name': 'focal', 'loss.gamma': 1.0},
    'focal_g2': {'loss.name': 'focal', 'loss.gamma': 2.0},
    'ghm': {'loss.name': 'ghm', 'loss.bins': 30, 'loss.momentum': 0.75},
    'dsc': {'loss.name': 'dsc', 'loss.alpha': 1.0, 'loss.gamma': 1.0},
    'tversky': {'loss.name': 'tversky', 'loss.alpha': 0.3, 'loss.beta': 0.7},
    'logit_adjusted_ce': {'loss.name': 'logit_adjusted_ce', 'loss.tau': 1.0},
    # Post-hoc: trained with CE, logits adjusted at eval (adjusted_* metrics).
    'ce_posthoc_la': {'loss.name': 'ce', 'eval_logit_adjustment_tau': 1.0},
    # q-power resampling with CE: q=0 class-balanced, q=0.5 square-root.
    'ce_q0': {'loss.name': 'ce', 'data.sampling_q': 0.0},
    'ce_q0.5': {'loss.name': 'ce', 'data.sampling_q': 0.5},
}
# Variants that need training class counts (a prior, weights or a sampler);
# span QA's classes are token positions, which have none.
NEEDS_CLASS_COUNTS = ('weighted_ce', 'class_balanced_ce', 'logit_adjusted_ce',
                      'ce_posthoc_la', 'ce_q0', 'ce_q0.5')


def parse_arg(arg: str) -> types.SimpleNamespace:
  """'drug_reviews,smoke,seeds=2' -> preset, smoke, seeds, variants."""
  parts = [p.strip() for p in (arg or 'drug_reviews').split(',') if p.strip()]
  a = types.SimpleNamespace(preset=parts[0], smoke=False, seeds=None,
                            variants=list(VARIANTS), max_len=None,
                            train_examples=0, eval_examples=0, epochs=None,
                            lr=None, init_from='')
  for part in parts[1:]:
    key, eq, value = part.partition('=')
    if not eq and key == 'smoke':
      a.smoke = True
    elif eq and key == 'seeds':
      a.seeds = int(value)
    elif eq and key == 'variants':
      a.variants = value.split('+')
    elif eq and key == 'max_len' and value.isdigit() and int(value) >= 8:
      a.max_len = int(value)
    elif (eq and key in ('train_examples', 'eval_examples')
          and value.isdigit() and int(value) > 0):
      setattr(a, key, int(value))
    elif eq and key in ('epochs', 'lr') and _positive_float(value):
      setattr(a, key, float(value))
    elif eq and key == 'init_from' and value:
      a.init_from = value
    else:
      raise ValueError(f'configs/ablation.py:{arg}: unknown item {part!r}; '
                       'known: smoke, seeds=N, variants=a+b, max_len=N (>= 8), '
                       'train_examples=N, eval_examples=N (> 0), epochs=X, '
                       'lr=X (> 0), init_from=DIR')
  if a.seeds is None:
    a.seeds = 2 if a.smoke else len(SEEDS)
  if not 1 <= a.seeds <= len(SEEDS):
    raise ValueError(f'configs/ablation.py:{arg}: seeds must be in '
                     f'1..{len(SEEDS)}')
  unknown = [v for v in a.variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f'configs/ablation.py:{arg}: unknown variants {unknown}; '
                     f'known: {list(VARIANTS)}')
  return a


def _positive_float(value: str) -> bool:
  try:
    return float(value) > 0
  except ValueError:
    return False


def get_config(arg: str = 'drug_reviews') -> ml_collections.ConfigDict:
  a = parse_arg(arg)
  c = finetune.get_config(a.preset)
  if a.smoke:
    _smoke(c)
  if a.max_len:
    c.data.max_seq_length = a.max_len
  if a.train_examples:
    c.data.max_train_examples = a.train_examples
  if a.eval_examples:
    c.data.max_eval_examples = a.eval_examples
  if a.epochs:
    c.num_epochs = a.epochs
  if a.lr:
    c.optim.lr = a.lr
  if a.init_from:
    c.model.init_from = a.init_from
  if not a.smoke:   # smoke: one compiled shape keeps the CI sweep quick
    step = max(1, c.data.max_seq_length // 4)
    c.data.length_buckets = tuple(range(step, c.data.max_seq_length, step))
  return c


def _smoke(c: ml_collections.ConfigDict) -> None:
  """A tiny fresh BERT with the MiniLM vocab, 100 steps of 16: checks the
  plumbing, not the losses (its numbers say little about which loss is
  better). Start-up and compilation dominate; the steps take seconds."""
  if not c.data.vocab:            # msra_ner keeps its Chinese vocab
    c.data.vocab = 'minilm'
  c.model.init_from = ''
  c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64)
  c.data.max_seq_length = 64
  c.data.length_bucket_count = 0   # one compiled shape
  if 'max_train_examples' in c.data:   # tagging: a slice of the sentences
    c.data.max_train_examples = 256
    c.data.max_eval_examples = 256
  c.total_steps = 100
  c.batch_size = 16
  c.eval_batch_size = 64
  c.optim.update(lr=3e-3, warmup_fraction=0.1)
  c.log_every = 10
  c.checkpoint_every = 1000        # only the final checkpoint


def sweep(add, arg: str = 'drug_reviews') -> None:
  """One run per (seed, variant); seed-major, so a partly finished sweep
  already has every variant for the first seeds."""
  a = parse_arg(arg)
  task = finetune.PRESETS[a.preset][0] if a.preset in finetune.PRESETS else ''
  names = [v for v in a.variants
           if task != 'span_qa' or v not in NEEDS_CLASS_COUNTS]
  for seed in SEEDS[:a.seeds]:
    for name in names:
      add(**VARIANTS[name], seed=seed)
