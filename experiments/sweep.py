r"""Sweeps defined in config files: expand, validate, name, launch.

  python -m experiments.sweep --config=configs/ablation.py:drug_reviews \
      --workdir=workdirs/ablation [--parallel=2] [--dry_run] [--smoke] \
      [--launcher=local|slurm|tpu]

A config file that defines `get_config(arg)` may also define `sweep(add)` or
`sweep(add, arg)`: it calls `add(**overrides)` once per run, with dotted keys
(`add(**{'loss.name': 'focal', 'loss.gamma': 2.0, 'seed': 1})`). Every run is
checked before anything runs: each key must be a field of `get_config(arg)`
and each value must survive the trip through `--config.<key>=<value>` (the
command line each run gets) unchanged. Each run gets a readable name built
from its overrides (`loss=focal,gamma=2,seed=1`), its directory
`<workdir>/<name>`, and its own process:

  python -m bert_jax.main --config=<file>:<arg> --config.<key>=<value> ... \
      --workdir=<workdir>/<name>

so a crash stays in its run. `<workdir>/sweep.json` records the runs; the
launchers (`experiments/launchers.py`) run them here, write a SLURM job
array, or write the commands for a TPU pod slice. A run whose `results.json`
exists is skipped, so rerunning the sweep resumes it (a run with a checkpoint
and no results resumes inside the trainer). `python -m experiments.report
<workdir>` then aggregates the runs.

A sweep is single-stage: every run is scored on the config's eval split, and
nothing is tuned per variant. To compare losses, use the tune-then-test
protocol of `experiments.tune` (per-variant tuning on dev, one test
evaluation, seed-aware intervals, Holm-adjusted significance).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import pathlib
import re
import shlex
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from bert_jax import config_cli
from experiments import launchers
import losses

SEED_KEY = 'seed'


class SweepError(ValueError):
  """A sweep that must not start: the message names each bad run and key."""


@dataclasses.dataclass
class Run:
  index: int
  name: str
  overrides: dict[str, Any]
  config: Optional[dict[str, Any]] = None   # as the run will see it (JSON)


# ------------------------------------------------------------ writing sweeps
def product(*axes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Cartesian product of lists of override dicts, merged; the first axis
  varies slowest. `product(losses, [{'seed': s} for s in (0, 1, 2)])`."""
  return [dict(itertools.chain.from_iterable(d.items() for d in combo))
          for combo in itertools.product(*axes)]


def axis(key: str, values: Iterable[Any]) -> list[dict[str, Any]]:
  """`axis('loss.gamma', [1.0, 2.0])` -> [{'loss.gamma': 1.0}, ...]."""
  return [{key: v} for v in values]


# ------------------------------------------------------------ loading
def split_spec(spec: str, smoke: bool = False) -> tuple[str, Optional[str]]:
  """'configs/x.py:arg' -> (path, arg); `smoke` appends ',smoke' to arg."""
  path, colon, arg = spec.partition(':')
  arg = arg if colon else None
  if smoke and 'smoke' not in (arg or '').split(','):
    arg = f'{arg},smoke' if arg else 'smoke'
  return path, arg


def join_spec(path: str, arg: Optional[str]) -> str:
  return path if arg is None else f'{path}:{arg}'


def load_module(path: str):
  if not os.path.exists(path):
    raise SweepError(f'--config: no file {path!r}')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def base_config(module, arg: Optional[str]):
  return module.get_config() if arg is None else module.get_config(arg)


def collect(module, arg: Optional[str]) -> list[dict[str, Any]]:
  """The overrides of each run, in the order `sweep` adds them. A file
  without `sweep` is one run with no overrides."""
  fn = getattr(module, 'sweep', None)
  if fn is None:
    return [{}]
  runs = []

  def add(**overrides):
    runs.append(dict(overrides))

  # sweep(add, arg) when it takes the arg (so `:drug_reviews,smoke` can
  # change the sweep too); big_vision's sweep(add) otherwise.
  if len(inspect.signature(fn).parameters) >= 2:
    fn(add, arg)
  else:
    fn(add)
  if not runs:
    raise SweepError('sweep(add) added no runs')
  return runs


# ------------------------------------------------------------ naming
def format_value(value: Any) -> str:
  """A value as written after `--config.k=` (floats by repr, exact)."""
  if isinstance(value, float):
    return repr(value)
  return str(value)


def short_keys(keys: Iterable[str]) -> dict[str, str]:
  """Each key's shortest dotted suffix unique among `keys`; 'x.name' reads
  as 'x' ('loss.name' -> 'loss', 'loss.gamma' -> 'gamma')."""
  keys = sorted(set(keys))

  def candidates(key):
    parts = key.split('.')
    if parts[-1] == 'name' and len(parts) > 1:
      parts = parts[:-1]
    return ['.'.join(parts[-i:]) for i in range(1, len(parts) + 1)] + [key]

  short = {}
  for key in keys:
    others = [c for k in keys if k != key for c in candidates(k)]
    short[key] = next((c for c in candidates(key) if c not in others), key)
  return short


def name_value(value: Any) -> str:
  text = format_value(value)
  if isinstance(value, float) and text.endswith('.0'):
    text = text[:-2]
  # Directory-safe; collisions after this are caught as duplicate names.
  return re.sub(r'[^A-Za-z0-9._+-]', '_', text)


def run_name(overrides: Mapping[str, Any], short: Mapping[str, str]) -> str:
  """'loss=focal,gamma=2,seed=1': overrides in the order given, seed last."""
  keys = [k for k in overrides if k != SEED_KEY]
  keys += [SEED_KEY] if SEED_KEY in overrides else []
  name = ','.join(f'{short[k]}={name_value(overrides[k])}' for k in keys)
  if len(name) > 200:   # file names stop at 255 bytes; keep it unique
    name = f'{name[:180]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}'
  return name or 'default'


def name_runs(all_overrides: Sequence[Mapping[str, Any]]) -> list[Run]:
  short = short_keys(k for o in all_overrides for k in o)
  return [Run(i, run_name(o, short), dict(o))
          for i, o in enumerate(all_overrides)]


# ------------------------------------------------------------ validation
def _leaf_keys(config, prefix=''):
  for key in config.keys():
    value = config[key]
    if hasattr(value, 'keys') and hasattr(value, 'lock'):   # a ConfigDict
      yield from _leaf_keys(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def _key_error(config, key: str) -> Optional[str]:
  """Why `key` is not an overridable field of `config`, or None. A key of a
  free-form section (`config_cli.FREE_FORM`: `model`, `loss`,
  `data.reader_options`) may be new; the code that reads the section
  validates it."""
  node = config
  parts = key.split('.')
  free_form = config_cli.free_form_section(key)
  for i, part in enumerate(parts):
    if free_form and i == len(parts) - 1 and hasattr(node, 'keys'):
      return None
    if not (hasattr(node, 'keys') and part in node.keys()):
      leaves = list(_leaf_keys(config))
      close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.6)
      hint = f"; did you mean '{close[0]}'?" if close else (
          f'; fields under {".".join(parts[:i]) or "the config"}: '
          f'{sorted(node.keys()) if hasattr(node, "keys") else "none"}')
      return f"unknown config key '{key}'{hint}"
    node = node[part]
  if hasattr(node, 'keys') and hasattr(node, 'lock'):
    return (f"'{key}' is a section, not a field; override its fields "
            f"(e.g. '{key}.{next(iter(node.keys()), '...')}')")
  return None


def _assign(config, key: str, value: Any) -> None:
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  if leaf not in node and config_cli.free_form_section(key):
    with node.unlocked():
      setattr(node, leaf, value)
  else:
    setattr(node, leaf, value)


def _get(config, key: str) -> Any:
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def command_overrides(overrides: Mapping[str, Any]) -> list[str]:
  return [f'--config.{k}={format_value(v)}' for k, v in overrides.items()]


def _parse_like_main(spec: str, overrides: Mapping[str, Any]):
  """The config `bert_jax.main` would build from this run's command line."""
  argv = ['main', f'--config={spec}'] + command_overrides(overrides)
  return config_cli.parse(argv)[0]


def _same(a: Any, b: Any) -> bool:
  """Equal, and of the same type except that an int may land in a float
  field (ConfigDict converts it; the trainer sees the same number)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if type(a) is type(b):
    return a == b
  return (isinstance(a, int) and not isinstance(a, bool)
          and isinstance(b, float) and float(a) == b)


def _check_loss(config) -> None:
  """The loss package knows each loss's keys."""
  try:
    losses.check_keys({k: v for k, v in config.loss.to_dict().items()
                       if v is not None})
  except ValueError as e:
    raise ValueError(f'config.loss: {e}') from e


def _check_model(config) -> None:
  """BertConfig's fields are the model section's keys (imported here: the
  model's flax imports only for a sweep over model keys)."""
  from bert_jax.tasks import base as task_base  # pylint: disable=g-import-not-at-top
  task_base.model_fields(config)


# Free-form config sections a sweep may set, and the check of each.
_FREE_FORM_CHECKS = {'loss': _check_loss, 'model': _check_model}


def validate(spec_path: str, arg: Optional[str], runs: Sequence[Run],
             module=None) -> None:
  """Raises SweepError listing every bad (run, key), before anything runs."""
  module = module or load_module(spec_path)
  try:
    config = base_config(module, arg)
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'{join_spec(spec_path, arg)}: get_config failed: '
                     f'{type(e).__name__}: {e}') from e
  errors = []
  seen = {}
  for run in runs:
    where = f'run {run.index} ({run.name})'
    if run.name in seen:
      errors.append(f'{where}: same name as run {seen[run.name]}; two runs '
                    'with the same overrides would share a directory')
    seen.setdefault(run.name, run.index)
    bad = False
    for key, value in run.overrides.items():
      problem = _key_error(config, key)
      if problem is None:
        trial = copy.deepcopy(config)
        try:
          _assign(trial, key, value)
        except (TypeError, ValueError, AttributeError, KeyError) as e:
          current = _get(config, key)
          problem = (f"'{key}' = {value!r} cannot be assigned to a field "
                     f'holding {current!r} ({type(current).__name__}): {e}')
      if problem:
        errors.append(f'{where}: {problem}')
        bad = True
    free = [s for s in _FREE_FORM_CHECKS
            if any(k.startswith(s + '.') for k in run.overrides)]
    if not bad and free:
      # Free-form sections: the code that reads them knows their keys.
      trial = copy.deepcopy(config)
      for key, value in run.overrides.items():
        _assign(trial, key, value)
      for section in free:
        try:
          _FREE_FORM_CHECKS[section](trial)
        except ValueError as e:
          errors.append(f'{where}: {e}')
          bad = True
          break
    if bad:
      continue
    # The value each run will really get: catches values that change type
    # on the command line (the string '1.0' in an untyped field, ...).
    try:
      parsed = _parse_like_main(join_spec(spec_path, arg), run.overrides)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'{where}: its command line does not parse: {e}')
      continue
    run.config = json.loads(parsed.to_json_best_effort())
    for key, value in run.overrides.items():
      got = _get(parsed, key)
      if not _same(value, got):
        errors.append(f"{where}: '{key}' = {value!r} would reach the run as "
                      f'{got!r} ({type(got).__name__}) through '
                      f'--config.{key}={format_value(value)}')
  if errors:
    shown = errors[:20] + ([f'... and {len(errors) - 20} more'] if
                           len(errors) > 20 else [])
    raise SweepError(f'{len(errors)} problem(s) in the sweep of {spec_path}; '
                     'nothing was run:\n  ' + '\n  '.join(shown))


def expand(spec: str, smoke: bool = False):
  """-> (path, arg, runs): the sweep of `spec`, named and validated."""
  path, arg = split_spec(spec, smoke)
  module = load_module(path)
  try:
    runs = name_runs(collect(module, arg))
  except SweepError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'{join_spec(path, arg)}: sweep() failed: {e}') from e
  validate(path, arg, runs, module)
  return path, arg, runs


def _diff(a: Any, b: Any, prefix: str = '') -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b))
            for d in _diff(a.get(k), b.get(k), f'{prefix}{k}.')]
  return [] if a == b else [f'{prefix[:-1]}: {b!r} there, {a!r} now']


# Config keys that change how a run is executed, not what it computes: left
# out when a finished run's config is compared with the sweep's.
EXECUTION_ONLY = ('compilation_cache_dir',)


def check_finished(runs: Sequence[Run], dirs: Sequence[pathlib.Path]) -> None:
  """A finished run is skipped, so its results must come from the config
  this sweep would give it (not from an older sweep in the same workdir)."""
  errors = []
  for run, d in zip(runs, dirs):
    path = pathlib.Path(d) / 'results.json'
    if run.config is None or not path.exists():
      continue
    try:
      old = json.loads(path.read_text()).get('config')
    except (OSError, ValueError):
      continue
    if old is None:
      continue
    new = {k: v for k, v in run.config.items() if k not in EXECUTION_ONLY}
    old = {k: v for k, v in old.items() if k not in EXECUTION_ONLY}
    if old != new:
      diff = _diff(new, old)
      errors.append(f'run {run.index} ({run.name}): {path} comes from another '
                    f'config ({"; ".join(diff[:3])}{"; ..." if len(diff) > 3 else ""})')
  if errors:
    raise SweepError('finished runs in this workdir do not match the sweep; '
                     'use another --workdir or remove them:\n  '
                     + '\n  '.join(errors))


# ------------------------------------------------------------ commands
def train_argv(python: str, spec: str, run: Run, workdir: str,
               compilation_cache_dir: str = '') -> list[str]:
  """One run's argv. Never joined into a shell string here: the local
  launcher execs it directly, the script launchers quote every element.

  With `compilation_cache_dir`, every run shares one persistent XLA cache:
  runs of a sweep compile the same steps (shapes do not depend on the loss
  or seed), so all but the first load them instead of compiling.
  """
  cache = []
  if (compilation_cache_dir and run.config is not None
      and 'compilation_cache_dir' in run.config
      and 'compilation_cache_dir' not in run.overrides):
    cache = [f'--config.compilation_cache_dir={compilation_cache_dir}']
  return ([python, '-m', 'bert_jax.main', f'--config={spec}']
          + command_overrides(run.overrides) + cache
          + [f'--workdir={workdir}'])


def write_sweep_json(workdir: pathlib.Path, spec: str, runs: Sequence[Run],
                     argvs: Sequence[Sequence[str]]) -> pathlib.Path:
  workdir.mkdir(parents=True, exist_ok=True)
  out = workdir / 'sweep.json'
  data = dict(config=spec, runs=[
      dict(index=r.index, name=r.name, overrides=r.overrides, argv=list(a))
      for r, a in zip(runs, argvs)])
  tmp = out.with_suffix('.json.tmp')
  tmp.write_text(json.dumps(data, indent=2, default=str))
  tmp.replace(out)
  return out


def launch(args, spec: str, runs: Sequence[Run],
           on_ok: Optional[Callable[[pathlib.Path], None]] = None) -> int:
  """Writes `<workdir>/sweep.json` and hands the runs to `args.launcher`.

  `args` holds the flags of `main` (and `launchers.add_flags`). A finished
  run is skipped, after checking it came from this sweep's config
  (`check_finished`; not for a TPU pod, whose directories are not visible
  here). Returns the exit status: 0, or 1 when a local run failed.
  `on_ok(run_dir)`: called as each local run finishes with its results.
  `run.index` must be the run's position in `runs` (the launchers, the
  array script and sweep.json index by it).
  """
  if [r.index for r in runs] != list(range(len(runs))):
    raise SweepError(f'{spec}: run indices {[r.index for r in runs]} are not '
                     'their positions 0..n-1')
  workdir = pathlib.Path(args.workdir).resolve()
  if args.launcher == 'tpu':
    base = (args.remote_workdir or args.workdir).rstrip('/')
    python = args.python or 'python3'
  else:
    base = str(workdir)
    python = args.python or sys.executable
  dirs = [f'{base}/{r.name}' for r in runs]
  cache = '' if args.no_compilation_cache else (
      args.compilation_cache_dir or f'{base}/compilation_cache')
  argvs = [train_argv(python, spec, r, d, cache) for r, d in zip(runs, dirs)]
  if args.launcher != 'tpu':   # the workers' directories are not visible here
    check_finished(runs, [pathlib.Path(d) for d in dirs])
  sweep_json = write_sweep_json(workdir, spec, runs, argvs)
  print(f'{len(runs)} runs of {spec}; wrote {sweep_json}')
  try:
    if args.launcher == 'slurm':
      script = launchers.write_slurm(
          workdir, runs, argvs, dirs, parallel=args.parallel,
          job_name=args.job_name or f'sweep-{workdir.name}',
          options=args.sbatch_option)
      print(f'Submit with:\n  sbatch {shlex.quote(str(script))}')
      return 0
    if args.launcher == 'tpu':
      script = launchers.write_tpu(workdir, runs, argvs, dirs, tpu=args.tpu,
                                   zone=args.zone, repo=args.remote_repo)
      if args.parallel > 1:
        print('note: a pod slice runs one run at a time; --parallel is '
              'ignored')
      print('Run (from a machine with gcloud):\n  bash '
            f'{shlex.quote(str(script))}')
      return 0
  except launchers.LaunchError as e:
    raise SweepError(str(e)) from e
  if args.dry_run:
    for run, argv, d in zip(runs, argvs, dirs):
      done = ' (done: results.json exists)' if (
          pathlib.Path(d) / launchers.RESULTS).exists() else ''
      print(f'[{run.index}] {run.name}{done}\n    {shlex.join(argv)}')
    return 0
  outcomes = launchers.run_local(runs, argvs, [pathlib.Path(d) for d in dirs],
                                 parallel=args.parallel,
                                 status_path=workdir / 'sweep_status.json',
                                 on_ok=on_ok)
  print(launchers.summary(outcomes, workdir))
  return 1 if any(o['status'] not in ('ok', 'skipped') for o in outcomes) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', required=True,
                 help='config file with get_config/sweep, e.g. '
                 'configs/ablation.py:drug_reviews')
  p.add_argument('--workdir', required=True, help='sweep directory')
  p.add_argument('--parallel', type=int, default=1,
                 help='runs at a time (local; SLURM array throttle)')
  p.add_argument('--dry_run', action='store_true',
                 help='validate, write sweep.json and print the commands')
  p.add_argument('--smoke', action='store_true',
                 help="append ',smoke' to the config arg (tiny, fast runs)")
  p.add_argument('--launcher', choices=('local', 'slurm', 'tpu'),
                 default='local')
  p.add_argument('--python', default=None,
                 help='interpreter in the commands (local/slurm: this one; '
                 'tpu: python3)')
  p.add_argument('--compilation_cache_dir', default='',
                 help='persistent XLA compilation cache shared by the runs '
                 '(default <workdir>/compilation_cache; a TPU pod: the remote '
                 'workdir\'s)')
  p.add_argument('--no_compilation_cache', action='store_true',
                 help='every run compiles its own steps')
  launchers.add_flags(p)
  args = p.parse_args(argv)
  if args.parallel < 1:
    p.error('--parallel must be >= 1')
  try:
    path, arg, runs = expand(args.config, args.smoke)
    return launch(args, join_spec(path, arg), runs)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
