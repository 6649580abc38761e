"""experiments.sweep / launchers: expansion, validation, resume, quoting, and
the smoke sweep end to end on real drug_reviews data."""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from experiments import report
from experiments import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]

# A small config file: typed fields like the real configs (float, int, str,
# untyped FieldReference like config.loss.*).
CONFIG = '''
import ml_collections
from experiments import sweep as sw

def get_config(arg='base'):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.note = arg
  c.loss = ml_collections.ConfigDict(dict(
      name='ce',
      gamma=ml_collections.FieldReference(None, field_type=object),
      alpha=ml_collections.FieldReference(None, field_type=object)))
  c.optim = ml_collections.ConfigDict(dict(lr=1e-3, steps=10))
  return c

SWEEP = None

def sweep(add, arg):
  for run in SWEEP or sw.product(
      [{'loss.name': 'ce'}, {'loss.name': 'focal', 'loss.gamma': 2.0}],
      sw.axis('seed', [0, 1])):
    add(**run)
'''


def _config(tmp_path, sweep_body=None, name='cfg.py'):
  text = CONFIG
  if sweep_body is not None:
    text = text.replace('SWEEP = None', f'SWEEP = {sweep_body}')
  path = tmp_path / name
  path.write_text(text)
  return path


FAKE_PYTHON = '''#!/usr/bin/env python3
"""Stands in for `python -m bert_jax.main`: records its argv, fails for
seed 1 (exit 3), else writes results.json."""
import json, os, pathlib, sys
argv = sys.argv[1:]
if argv[:1] == ['-c']:          # the TPU script's "results exist?" check
  sys.exit(1)
workdir = pathlib.Path([a for a in argv if a.startswith('--workdir=')][0][10:])
with open(os.environ['FAKE_CALLS'], 'a') as f:
  f.write(json.dumps(argv) + '\\n')
if '--config.seed=1' in argv:
  print('Traceback: boom', file=sys.stderr)
  sys.exit(3)
workdir.mkdir(parents=True, exist_ok=True)
(workdir / 'results.json').write_text('{}')
'''


def _fake_python(tmp_path):
  path = tmp_path / 'fake_python'
  path.write_text(FAKE_PYTHON.replace('#!/usr/bin/env python3',
                                      f'#!{sys.executable}'))
  path.chmod(0o755)
  return path


def _calls(path):
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines()]


# ------------------------------------------------------------ expansion
def test_expands_names_and_writes_sweep_json(tmp_path, capsys):
  cfg = _config(tmp_path)
  out = tmp_path / 'out'
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     '--dry_run']) == 0
  data = json.loads((out / 'sweep.json').read_text())
  assert [r['name'] for r in data['runs']] == [
      'loss=ce,seed=0', 'loss=ce,seed=1', 'loss=focal,gamma=2,seed=0',
      'loss=focal,gamma=2,seed=1']
  assert data['runs'][2]['overrides'] == {'loss.name': 'focal',
                                          'loss.gamma': 2.0, 'seed': 0}
  argv = data['runs'][2]['argv']
  assert argv[1:] == [
      '-m', 'bert_jax.main', f'--config={cfg}:base', '--config.loss.name=focal',
      '--config.loss.gamma=2.0', '--config.seed=0',
      f'--workdir={out.resolve()}/loss=focal,gamma=2,seed=0']
  assert 'loss=focal,gamma=2,seed=1' in capsys.readouterr().out
  assert not (out / 'loss=ce,seed=0').exists()    # dry run: nothing ran


def test_dry_run_marks_finished_runs_and_launch_checks_indices(tmp_path,
                                                              capsys):
  cfg = _config(tmp_path)
  out = tmp_path / 'out'
  (out / 'loss=ce,seed=1').mkdir(parents=True)
  (out / 'loss=ce,seed=1' / 'results.json').write_text('{}')
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     '--dry_run', '--no_compilation_cache']) == 0
  printed = capsys.readouterr().out
  assert '[1] loss=ce,seed=1 (done' in printed
  assert '[0] loss=ce,seed=0\n' in printed
  # The launchers index runs by position: a subset keeping its sweep
  # indices is refused, not launched into the wrong directories.
  runs = sweep.name_runs([{'seed': 0}, {'seed': 1}])[1:]
  args = sweep.argparse.Namespace(
      workdir=str(out), launcher='local', python=None, dry_run=True,
      no_compilation_cache=True, compilation_cache_dir='', parallel=1)
  with pytest.raises(sweep.SweepError, match=r'indices \[1\] are not'):
    sweep.launch(args, f'{cfg}:base', runs)


def test_short_names_stay_unique():
  runs = sweep.name_runs([{'loss.alpha': 1.0, 'optim.alpha': 2, 'seed': 0},
                          {'loss.name': 'x', 'model.name': 'y'}])
  assert runs[0].name == 'loss.alpha=1,optim.alpha=2,seed=0'
  assert runs[1].name == 'loss=x,model=y'


def test_smoke_flag_appends_to_the_arg():
  assert sweep.split_spec('c.py:drug_reviews', smoke=True) == (
      'c.py', 'drug_reviews,smoke')
  assert sweep.split_spec('c.py:a,smoke', smoke=True) == ('c.py', 'a,smoke')
  assert sweep.split_spec('c.py') == ('c.py', None)


def test_big_vision_style_sweep_add(tmp_path):
  cfg = tmp_path / 'bv.py'
  cfg.write_text(CONFIG.replace('def sweep(add, arg):', 'def sweep(add):'))
  _, _, runs = sweep.expand(f'{cfg}:base')
  assert len(runs) == 4


def test_ablation_config_sweep():
  _, _, runs = sweep.expand(str(REPO / 'configs/ablation.py') + ':drug_reviews')
  assert len(runs) == 36 and len({r.name for r in runs}) == 36
  names = {r.name for r in runs if r.overrides['seed'] == 0}
  for expected in ('loss=ce,seed=0', 'loss=weighted_ce,alpha=inverse_freq,seed=0',
                   'loss=class_balanced_ce,beta=0.999,seed=0',
                   'loss=focal,gamma=1,seed=0', 'loss=focal,gamma=2,seed=0',
                   'loss=logit_adjusted_ce,tau=1,seed=0',
                   'loss=ce,eval_logit_adjustment_tau=1,seed=0',
                   'loss=ce,sampling_q=0,seed=0', 'loss=ce,sampling_q=0.5,seed=0'):
    assert expected in names
  _, arg, smoke = sweep.expand(str(REPO / 'configs/ablation.py') +
                               ':drug_reviews', smoke=True)
  assert arg == 'drug_reviews,smoke' and len(smoke) == 24   # 12 x 2 seeds
  # Tagging evaluates post-hoc logit adjustment too (per token).
  _, _, ner = sweep.expand(str(REPO / 'configs/ablation.py') + ':msra_ner,seeds=1')
  assert len(ner) == 12
  # Span QA's classes are positions: no variant that needs class counts.
  _, _, qa = sweep.expand(str(REPO / 'configs/ablation.py') + ':disfl_qa,seeds=1')
  assert sorted(r.name for r in qa) == sorted([
      'loss=ce,seed=0', 'loss=focal,gamma=1,seed=0', 'loss=focal,gamma=2,seed=0',
      'loss=ghm,bins=30,momentum=0.75,seed=0', 'loss=dsc,alpha=1,gamma=1,seed=0',
      'loss=tversky,alpha=0.3,beta=0.7,seed=0'])


def test_ablation_config_max_len_and_buckets():
  from configs import ablation  # pylint: disable=g-import-not-at-top
  c = ablation.get_config('drug_reviews,max_len=128,seeds=1')
  assert c.data.max_seq_length == 128
  assert c.data.length_buckets == (32, 64, 96)
  assert not c.data.group_by_length
  assert ablation.get_config('drug_reviews').data.length_buckets == (64, 128, 192)
  for bad in ('drug_reviews,max_len=abc', 'drug_reviews,max_len=4',
              'drug_reviews,maxlen=128'):
    with pytest.raises(ValueError, match='max_len=N'):
      ablation.get_config(bad)


def test_ablation_config_subsets_epochs_and_init(tmp_path):
  from configs import ablation  # pylint: disable=g-import-not-at-top
  c = ablation.get_config('spam_assassin,train_examples=800,eval_examples=300,'
                          f'epochs=2.5,lr=1e-3,init_from={tmp_path}')
  assert c.data.max_train_examples == 800 and c.data.max_eval_examples == 300
  assert c.num_epochs == 2.5 and c.model.init_from == str(tmp_path)
  assert c.optim.lr == 1e-3
  plain = ablation.get_config('spam_assassin')
  assert plain.data.max_train_examples == 0 and plain.model.init_from == 'minilm'
  for bad in ('spam_assassin,train_examples=0', 'spam_assassin,epochs=-1',
              'spam_assassin,epochs=x', 'spam_assassin,init_from=',
              'spam_assassin,lr=0',
              'spam_assassin,eval_examples=1.5'):
    with pytest.raises(ValueError, match='unknown item'):
      ablation.get_config(bad)


# ------------------------------------------------------------ validation
def test_typo_fails_before_anything_runs(tmp_path, capsys, monkeypatch):
  cfg = _config(tmp_path, "[{'seed': 0}, {'seed': 1}, "
                "{'loss.name': 'focal', 'loss.gama': 2.0, 'seed': 0}]")
  out = tmp_path / 'out'
  fake = _fake_python(tmp_path)
  monkeypatch.setenv('FAKE_CALLS', str(tmp_path / 'calls'))
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     f'--python={fake}']) == 2
  err = capsys.readouterr().err
  # config.loss is free-form; the loss package names the bad key.
  assert ("run 2 (loss=focal,gama=2,seed=0): config.loss: Unknown "
          "hyperparameter(s) ['gama'] for loss 'focal'") in err
  assert "Did you mean 'gamma'?" in err
  assert not out.exists() and not _calls(tmp_path / 'calls')


@pytest.mark.parametrize('overrides,message', [
    ({'optim.lr': 'fast'}, "'optim.lr' = 'fast' cannot be assigned"),
    ({'optim.steps': 2.5}, "'optim.steps' = 2.5 cannot be assigned"),
    # An untyped field would get the float 1.0 from '--config.loss.alpha=1.0'.
    ({'loss.name': 'focal', 'loss.alpha': '1.0'},
     "'loss.alpha' = '1.0' would reach the run as 1.0"),
    ({'loss': 'ce'}, "'loss' is a section"),
])
def test_bad_values_name_run_and_key(tmp_path, overrides, message):
  cfg = _config(tmp_path, f'[{{}}, {overrides!r}]')
  with pytest.raises(sweep.SweepError, match='run 1 ') as e:
    sweep.expand(f'{cfg}:base')
  assert message in str(e.value)


def test_model_keys_are_checked_against_bert_config(tmp_path):
  cfg = _config(tmp_path, "[{'model.hidden_size': 64}, {'model.hiden_size': 64}]")
  cfg.write_text(cfg.read_text().replace(
      '  return c\n',
      "  c.model = ml_collections.ConfigDict(dict(init_from=''))\n  return c\n"))
  with pytest.raises(sweep.SweepError) as e:
    sweep.expand(f'{cfg}:base')
  message = str(e.value)
  assert re.search(r'run 1 \([^)]*\): config\.model\.hiden_size: unknown key',
                   message), message
  assert "Did you mean 'hidden_size'?" in message and 'run 0' not in message


def test_duplicate_runs_are_refused(tmp_path):
  cfg = _config(tmp_path, "[{'seed': 0}, {'seed': 0}]")
  with pytest.raises(sweep.SweepError, match='same name as run 0'):
    sweep.expand(f'{cfg}:base')


# ------------------------------------------------------------ local runner
def test_resume_skips_done_runs_and_failures_do_not_stop_others(
    tmp_path, capsys, monkeypatch):
  cfg = _config(tmp_path)
  out = tmp_path / 'out'
  calls = tmp_path / 'calls'
  monkeypatch.setenv('FAKE_CALLS', str(calls))
  fake = _fake_python(tmp_path)
  # Run 0 finished in an earlier attempt.
  (out / 'loss=ce,seed=0').mkdir(parents=True)
  (out / 'loss=ce,seed=0' / 'results.json').write_text('{}')
  args = [f'--config={cfg}:base', f'--workdir={out}', f'--python={fake}',
          '--parallel=2']
  assert sweep.main(args) == 1                 # some run failed
  ran = sorted(a[-1].rsplit('/', 1)[1] for a in _calls(calls))
  assert ran == ['loss=ce,seed=1', 'loss=focal,gamma=2,seed=0',
                 'loss=focal,gamma=2,seed=1']
  status = {o['name']: o for o in
            json.loads((out / 'sweep_status.json').read_text())}
  assert status['loss=ce,seed=0']['status'] == 'skipped'
  assert status['loss=focal,gamma=2,seed=0']['status'] == 'ok'
  failed = status['loss=ce,seed=1']
  assert failed['status'] == 'failed' and failed['returncode'] == 3
  assert 'Traceback: boom' in pathlib.Path(failed['log']).read_text()
  text = capsys.readouterr().out
  assert 'FAILED loss=ce,seed=1: exit 3' in text and '2 failed' in text

  # Second attempt: only the two failed runs run again.
  calls.unlink()
  sweep.main(args)
  assert sorted(a[-1].rsplit('/', 1)[1] for a in _calls(calls)) == [
      'loss=ce,seed=1', 'loss=focal,gamma=2,seed=1']


def test_results_of_another_config_are_not_skipped_silently(tmp_path, capsys):
  cfg = _config(tmp_path)
  out = tmp_path / 'out'
  (out / 'loss=ce,seed=0').mkdir(parents=True)
  (out / 'loss=ce,seed=0' / 'results.json').write_text(json.dumps(
      {'config': {'seed': 0, 'note': 'base', 'loss': {'name': 'ce'},
                  'optim': {'lr': 0.1, 'steps': 10}}}))
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     '--dry_run']) == 2
  err = capsys.readouterr().err
  assert 'run 0 (loss=ce,seed=0)' in err and 'optim.lr: 0.1 there, 0.001 now' in err
  assert not (out / 'sweep.json').exists()


def test_runs_share_a_compilation_cache(tmp_path, capsys, monkeypatch):
  cfg = _config(tmp_path)
  cfg.write_text(cfg.read_text().replace(
      "  c.seed = 0\n", "  c.seed = 0\n  c.compilation_cache_dir = ''\n"))
  out = tmp_path / 'out'
  calls = tmp_path / 'calls'
  monkeypatch.setenv('FAKE_CALLS', str(calls))
  fake = _fake_python(tmp_path)
  # A run finished with another cache directory is the same run: skipped.
  done = out / 'loss=ce,seed=0'
  done.mkdir(parents=True)
  (done / 'results.json').write_text(json.dumps(
      {'config': {'seed': 0, 'compilation_cache_dir': '/elsewhere',
                  'note': 'base', 'loss': {'name': 'ce', 'gamma': None,
                                           'alpha': None},
                  'optim': {'lr': 0.001, 'steps': 10}}}))
  sweep.main([f'--config={cfg}:base', f'--workdir={out}', f'--python={fake}'])
  argvs = _calls(calls)
  assert len(argvs) == 3                       # run 0 skipped
  flag = f'--config.compilation_cache_dir={out.resolve()}/compilation_cache'
  assert all(flag in a for a in argvs)
  calls.unlink()
  sweep.main([f'--config={cfg}:base', f'--workdir={tmp_path / "out2"}',
              f'--python={fake}', '--no_compilation_cache'])
  assert not any('compilation_cache' in x for a in _calls(calls) for x in a)
  # A config without the key gets no flag (it would be an unknown key).
  calls.unlink()
  plain = _config(tmp_path, name='plain.py')
  sweep.main([f'--config={plain}:base', f'--workdir={tmp_path / "out3"}',
              f'--python={fake}'])
  assert not any('compilation_cache' in x for a in _calls(calls) for x in a)
  capsys.readouterr()


# ------------------------------------------------------------ quoting
EVIL = 'x; touch PWNED $(touch PWNED2) `touch PWNED3` \'"\\ ~'


def _evil_config(tmp_path):
  # A free string field (loss.name is checked against the loss registry).
  return _config(tmp_path, f"[{{'note': {EVIL!r}, 'seed': 0}}]")


def test_slurm_script_keeps_a_hostile_value_one_argument(tmp_path, capsys):
  cfg, out = _evil_config(tmp_path), tmp_path / 'out'
  fake = _fake_python(tmp_path)
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     '--launcher=slurm', f'--python={fake}', '--parallel=3',
                     '--sbatch_option=--gres=gpu:1']) == 0
  script = out / 'sweep.sbatch'
  assert f'sbatch {script}' in capsys.readouterr().out
  text = script.read_text()
  assert '#SBATCH --array=0-0%3' in text and '#SBATCH --gres=gpu:1' in text
  subprocess.run(['bash', '-n', str(script)], check=True)
  # Parsed as a shell would: the value is one element of the command.
  cmd_line = next(l for l in text.splitlines() if l.strip().startswith('CMD=('))
  words = shlex.split(cmd_line.strip()[len('CMD=('):-len(') ;;')])
  assert f'--config.note={EVIL}' in words
  # Run it (as SLURM would, with the fake interpreter): one argv element,
  # and nothing of the value was executed.
  calls = tmp_path / 'calls'
  env = dict(os.environ, SLURM_ARRAY_TASK_ID='0', SLURM_JOB_ID='1',
             FAKE_CALLS=str(calls))
  subprocess.run(['bash', str(script)], check=True, env=env, cwd=tmp_path)
  (argv,) = _calls(calls)
  assert f'--config.note={EVIL}' in argv
  assert not list(tmp_path.glob('PWNED*')) and not list(REPO.glob('PWNED*'))


def test_a_multi_line_slurm_option_is_an_error_naming_it(tmp_path, capsys):
  cfg, out = _config(tmp_path), tmp_path / 'out'
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     '--launcher=slurm', '--job_name=a\nb']) == 2
  assert 'error: --job_name must be one line' in capsys.readouterr().err
  assert not (out / 'sweep.sbatch').exists()


def test_tpu_script_quotes_for_both_shells(tmp_path, capsys):
  cfg, out = _evil_config(tmp_path), tmp_path / 'out'
  assert sweep.main([f'--config={cfg}:base', f'--workdir={out}',
                     '--launcher=tpu', '--tpu=my-tpu', '--zone=us-central2-b',
                     f'--remote_repo={tmp_path}',
                     '--remote_workdir=gs://bucket/sweep']) == 0
  script = out / 'sweep_tpu.sh'
  subprocess.run(['bash', '-n', str(script)], check=True)
  line = next(l for l in script.read_text().splitlines()
              if l.startswith('gcloud'))
  words = shlex.split(line)
  local = words[:words.index('||')]     # the gcloud command, as bash splits it
  assert local[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh']
  assert '--worker=all' in local
  remote = local[local.index('--command') + 1]
  assert f'--config.note={EVIL}' in shlex.split(remote)
  assert '--workdir=gs://bucket/sweep/note=' in remote
  # Run it with a fake gcloud that runs --command in a shell, as a worker
  # would, and the fake interpreter: still one argument, nothing executed.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = _fake_python(tmp_path)
  (bin_dir / 'python3').symlink_to(fake)
  gcloud = bin_dir / 'gcloud'
  gcloud.write_text('#!/bin/bash\nwhile [ "$1" != --command ]; do shift; done\n'
                    'exec bash -c "$2"\n')
  gcloud.chmod(0o755)
  calls = tmp_path / 'calls'
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
             FAKE_CALLS=str(calls))
  subprocess.run(['bash', str(script)], env=env, cwd=tmp_path,
                 capture_output=True)
  (argv,) = _calls(calls)
  assert f'--config.note={EVIL}' in argv
  assert not list(tmp_path.glob('PWNED*'))


# ------------------------------------------------------------ end to end
def _smoke(tmp_path, monkeypatch, variants):
  out = tmp_path / 'smoke'
  spec = 'configs/ablation.py:drug_reviews'
  if variants:
    spec += f',variants={variants}'
  monkeypatch.chdir(REPO)     # the runs resolve configs/ from here
  rc = sweep.main([f'--config={spec}', '--smoke', f'--workdir={out}',
                   '--parallel=2'])
  assert rc == 0, (out / 'sweep_status.json').read_text()
  assert report.main([str(out)]) == 0
  return out


def test_smoke_sweep_end_to_end(tmp_path, monkeypatch):
  """2 losses x 2 seeds of a tiny random-init BERT, 100 steps each."""
  out = _smoke(tmp_path, monkeypatch, 'ce+focal_g2')
  text = (out / 'report.md').read_text()
  assert re.search(r'\| `loss=ce` \(baseline\) \| 2 \| \d\.\d{4} ± \d\.\d{4}', text)
  assert '| `loss=focal,gamma=2` | 2 |' in text
  assert 'Δ macro_f1' in text and 'Δ minority_f1' in text
  assert 'disagrees' not in text and 'missing' not in text
  for png in ('per_class_f1.png', 'train_loss.png'):
    assert (out / png).stat().st_size > 10_000
  # Rerunning skips every finished run.
  assert sweep.main(['--config=configs/ablation.py:drug_reviews,variants='
                     'ce+focal_g2', '--smoke', f'--workdir={out}']) == 0
  status = json.loads((out / 'sweep_status.json').read_text())
  assert {o['status'] for o in status} == {'skipped'}


@pytest.mark.slow
def test_full_smoke_sweep(tmp_path, monkeypatch):
  """All 12 variants x 2 seeds (about 5 minutes on 2 cores)."""
  out = _smoke(tmp_path, monkeypatch, '')
  text = (out / 'report.md').read_text()
  assert text.count('| `loss=') >= 2 * 12 - 1
  assert (out / 'vs_loss_gamma.png').exists()
  assert (out / 'vs_data_sampling_q.png').exists()
  assert 'post-hoc adjusted predictions' in text
