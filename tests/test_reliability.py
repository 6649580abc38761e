"""Preemption: a real SIGTERM to a real training process loses nothing."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))
import train_probe  # noqa: E402  pylint: disable=g-import-not-at-top

STEPS = 40


def _command(workdir: pathlib.Path, corpus: str) -> list[str]:
  c = train_probe.tiny_config(workdir)
  flags = {
      'data.corpus': corpus, 'data.vocab': 'minilm', 'data.max_seq_length': 64,
      'data.max_predictions_per_seq': 10, 'data.dupe_factor': 1,
      'data.eval_fraction': 0.2, 'data.max_eval_examples': 32,
      'model.hidden_size': c.model.hidden_size,
      'model.num_hidden_layers': c.model.num_hidden_layers,
      'model.num_attention_heads': c.model.num_attention_heads,
      'model.intermediate_size': c.model.intermediate_size,
      'model.max_position_embeddings': 64, 'batch_size': 16,
      'eval_batch_size': 16, 'total_steps': STEPS, 'log_every': 1,
      'eval_every': 0, 'checkpoint_every': 1000, 'optim.lr': 1e-3,
  }
  return ([sys.executable, '-m', 'bert_jax.main',
           '--config=configs/pretrain.py:tiny', f'--workdir={workdir}']
          + [f'--config.{k}={v}' for k, v in flags.items()])


def _env():
  return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2',
              XLA_FLAGS='--xla_force_host_platform_device_count=1')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return train_probe.tiny_corpus(tmp_path_factory.mktemp('corpus'))


def test_sigterm_checkpoints_exits_cleanly_and_resume_is_bit_exact(tmp_path, corpus):
  # Interrupted: SIGTERM once step 5 has been logged.
  interrupted = tmp_path / 'interrupted'
  proc = subprocess.Popen(_command(interrupted, corpus), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  log = []
  deadline = time.time() + 600
  for line in proc.stdout:
    log.append(line)
    if '] [5] ' in line or line.startswith('[5] '):
      proc.send_signal(signal.SIGTERM)
      break
    assert time.time() < deadline, 'training never reached step 5'
  rest, _ = proc.communicate(timeout=300)
  log.append(rest)
  assert proc.returncode == 0, ''.join(log)[-3000:]
  steps = sorted(int(p.name) for p in (interrupted / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps and 5 <= steps[-1] < STEPS, (steps, ''.join(log)[-2000:])
  assert not (interrupted / 'results.json').exists()
  # The same command again resumes and finishes.
  again = subprocess.run(_command(interrupted, corpus), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'resumed at step' in again.stderr
  # Uninterrupted reference.
  reference = tmp_path / 'reference'
  ref = subprocess.run(_command(reference, corpus), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]
  import json  # pylint: disable=g-import-not-at-top
  a = train_probe.summarize(interrupted, json.loads((interrupted / 'results.json').read_text()))
  b = train_probe.summarize(reference, json.loads((reference / 'results.json').read_text()))
  assert a['step'] == b['step'] == STEPS
  assert a['checksum'] == b['checksum']          # bit for bit
  assert a['final_eval'] == b['final_eval']
