"""Bad configs fail at once, through the real CLI, with one error naming the key.

Each case runs `python -m bert_jax.main` on 8 fake CPU devices and checks
that it exits non-zero, that the last line of its output (the error) names
the offending key, that nothing was written to the run directory
(checkpoints, results, TensorBoard events), and that it failed before XLA
compiled anything: the child runs with JAX_LOG_COMPILES=1, which logs every
compilation, and its output must not contain a single 'Compiling' line.
`test_compile_log_signal_works` checks that this signal is live.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8


def _env():
  return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2',
              JAX_LOG_COMPILES='1', JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES}')


@pytest.fixture(scope='module')
def tiny_tsv(tmp_path_factory) -> pathlib.Path:
  """A 40-row two-class TSV, so fine-tuning cases read no large data set."""
  path = tmp_path_factory.mktemp('data') / 'train.tsv'
  rows = ['text\tlabel'] + [
      f'review number {i} was {"great" if i % 2 else "awful"}\t'
      f'{"pos" if i % 2 else "neg"}' for i in range(40)]
  path.write_text('\n'.join(rows) + '\n')
  return path


@pytest.fixture(scope='module')
def tiny_vocab(tmp_path_factory) -> pathlib.Path:
  """A 12-entry WordPiece vocab: smaller than any pretrained model's."""
  path = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
  path.write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]',
                             'the', 'a', 'review', 'was', 'great', 'awful',
                             '##s']) + '\n')
  return path


def _pretrain(flags):
  return ['--config=configs/pretrain.py:tiny'] + flags


def _finetune(tsv, flags):
  # drug_reviews is only the preset: its data is replaced by the tiny TSV.
  return ['--config=configs/finetune.py:drug_reviews',
          f'--config.data.train={tsv}', f'--config.data.eval={tsv}',
          '--config.batch_size=8', '--config.eval_batch_size=8'] + flags


# (id, job, flags, text the final error line must contain)
CASES = [
    ('unknown_key', 'pretrain', ['--config.optim.lrr=1'], 'lrr'),
    ('unknown_nested_key', 'finetune', ['--config.loss.gama=2'], 'gama'),
    ('unknown_model_key', 'pretrain', ['--config.model.hiden_size=64'],
     'config.model.hiden_size: unknown key'),
    ('model_key_wrong_type', 'pretrain', ['--config.model.scan_layers=yes'],
     'config.model.scan_layers: wrong type'),
    ('architecture_unlike_init_from', 'finetune',
     ['--config.model.hidden_size=64'], 'config.model.hidden_size=64'),
    # A fresh model's vocabulary size is its vocab's: a different one set
    # by hand is an error, not silently replaced.
    ('vocab_size_unlike_vocab_finetune', 'finetune',
     ['--config.model.init_from=', '--config.data.vocab=minilm',
      '--config.model.vocab_size=999'],
     'config.model.vocab_size=999'),
    ('vocab_size_unlike_vocab_pretrain', 'pretrain',
     ['--config.data.vocab=minilm', '--config.model.vocab_size=999'],
     'config.model.vocab_size=999'),
    # Pretraining on from a checkpoint: its config.json fixes the
    # architecture (tiny's sizes differ from MiniLM's) and the vocab size.
    ('architecture_unlike_init_from_pretrain', 'pretrain',
     ['--config.model.init_from=minilm'],
     'but the config.json of config.model.init_from=\'minilm\''),
    ('vocab_unlike_init_from_pretrain', 'pretrain',
     ['--config.model.init_from=minilm', '--config.data.vocab={vocab}',
      '--config.model.hidden_size=None', '--config.model.num_hidden_layers=None',
      '--config.model.num_attention_heads=None',
      '--config.model.intermediate_size=None',
      '--config.model.max_position_embeddings=None'],
     'but the checkpoint config.model.init_from=\'minilm\' has vocab_size='),
    ('wrong_type', 'pretrain', ['--config.batch_size=abc'],
     'config.batch_size'),
    ('negative_lr', 'pretrain', ['--config.optim.lr=-1'], 'config.optim.lr'),
    ('unknown_optimizer', 'pretrain', ['--config.optim.name=sgd'],
     'config.optim.name'),
    ('focal_negative_gamma', 'finetune',
     ['--config.loss.name=focal', '--config.loss.gamma=-1'], 'gamma'),
    ('unknown_loss', 'finetune', ['--config.loss.name=focall'], 'focall'),
    ('unknown_task', 'pretrain', ['--config.task=pretraining'],
     'config.task'),
    ('batch_not_divisible_by_devices', 'pretrain', ['--config.batch_size=12'],
     'config.batch_size=12'),
    ('eval_batch_not_divisible', 'pretrain', ['--config.eval_batch_size=20'],
     'config.eval_batch_size=20'),
    ('mesh_does_not_divide', 'pretrain', ['--config.mesh.fsdp=3'],
     'config.mesh'),
    ('unknown_sharding', 'pretrain', ['--config.sharding=zero3'],
     'config.sharding'),
    ('unknown_nonfinite_policy', 'pretrain', ['--config.nonfinite=ignore'],
     'config.nonfinite'),
    ('zero_log_every', 'pretrain', ['--config.log_every=0'],
     'config.log_every'),
    ('keep_no_checkpoints', 'pretrain', ['--config.keep_checkpoints=0'],
     'config.keep_checkpoints'),
    ('seq_len_over_positions_pretrain', 'pretrain',
     ['--config.data.max_seq_length=256'], 'config.data.max_seq_length'),
    ('seq_len_over_positions_finetune', 'finetune',
     ['--config.data.max_seq_length=1024'], 'config.data.max_seq_length'),
    ('sampling_q_above_1', 'finetune', ['--config.data.sampling_q=1.5'],
     'config.data.sampling_q'),
    ('sampling_q_below_0', 'finetune', ['--config.data.sampling_q=-0.5'],
     'config.data.sampling_q'),
]


@pytest.mark.parametrize('job,flags,expected', [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_config_fails_fast_naming_the_key(tmp_path, tiny_tsv, tiny_vocab,
                                              job, flags, expected):
  workdir = tmp_path / 'run'
  flags = [f.replace('{vocab}', str(tiny_vocab)) for f in flags]
  args = _pretrain(flags) if job == 'pretrain' else _finetune(tiny_tsv, flags)
  proc = subprocess.run(
      [sys.executable, '-m', 'bert_jax.main', f'--workdir={workdir}'] + args,
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  output = proc.stdout + proc.stderr
  assert proc.returncode != 0, output[-3000:]
  # One error, and it is the last thing printed (before absl's usage hint for
  # a flag that does not parse): not buried in a log.
  lines = [line for line in output.splitlines()
           if line.strip() and not line.startswith('Pass --helpshort')]
  assert expected in lines[-1], output[-3000:]
  assert 'Compiling' not in output, (
      'the config error came after XLA compiled something:\n'
      + '\n'.join(line for line in output.splitlines() if 'Compiling' in line))
  written = sorted(p.name for p in workdir.iterdir()) if workdir.exists() else []
  assert written == [], written


def test_compile_log_signal_works():
  """The child environment does log compilations (else the test above is void)."""
  proc = subprocess.run(
      [sys.executable, '-c', 'import jax.numpy as jnp; (jnp.ones(3) + 1).block_until_ready()'],
      env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'Compiling' in proc.stderr


def test_chinese_msra_pretraining_matches_the_msra_ner_encoder():
  """configs/pretrain.py:chinese_msra pretrains the encoder msra_ner starts
  from: same vocab file and architecture, Chinese corpus, every variant
  builds."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from configs import finetune  # pylint: disable=g-import-not-at-top
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  for variant in pretrain.VARIANTS:
    pretrain.get_config(variant)
  pre, ner = pretrain.get_config('chinese_msra'), finetune.get_config('msra_ner')
  assert pre.data.corpus == 'msra' and pre.data.vocab == ner.data.vocab
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  assert pathlib.Path(pretraining.resolve_vocab(pre)).is_file()
  for key in ('hidden_size', 'num_hidden_layers', 'num_attention_heads',
              'intermediate_size'):
    assert pre.model[key] == ner.model[key], key
  assert pre.model.max_position_embeddings >= pre.data.max_seq_length


def test_building_a_config_reads_and_fetches_nothing(monkeypatch):
  """Configs are plain data: registry names are resolved when the run
  starts, never while a config is built."""
  from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
  from configs import finetune  # pylint: disable=g-import-not-at-top
  from configs import pretrain  # pylint: disable=g-import-not-at-top

  def no_fetch(name):
    raise AssertionError(f'a config fetched {name!r} while being built')

  monkeypatch.setattr(registry, 'fetch', no_fetch)
  for preset in finetune.PRESETS:
    finetune.get_config(preset)
  for variant in pretrain.VARIANTS:
    pretrain.get_config(variant)
