r"""Tune-then-test: the default way to compare losses here.

  python -m experiments.tune --config=configs/ablation.py:drug_reviews \
      --workdir=workdirs/tune_drug_reviews [--smoke] [--parallel=2] \
      [--launcher=local|slurm|tpu] [--dry_run]

The config file's `tune(arg)` declares the protocol as plain data (see
`configs/ablation.py`): the variants (fixed overrides), each variant's search
space (axes of override dicts; every variant the same number of trials), the
overrides that evaluate on the dev split and on the test split, the tuning
and final seeds, the baseline and the selection metric.

  Stage 1 (`<workdir>/stage1/<run>`): every trial x tuning seed, trained on
    train and evaluated on dev.
  Selection (`<workdir>/selection.json`): per variant, the trial with the
    best dev metric averaged over the tuning seeds; ties (within 1e-12), e.g.
    trials that all predict the majority class, go to the lower mean dev
    cross-entropy, then to the earliest trial in the declared search order.
  Stage 2 (`<workdir>/stage2/<run>`): each variant's selected point x final
    seeds, trained on the same training data and evaluated once on test.
  Report (`<workdir>/report.md`, `report.json`, plots): `experiments.tune_report`.

Everything is checked before anything runs: every run of stage 1 and a
sample of stage 2 (each variant's first trial with every final seed and the
test overrides) go through `experiments.sweep.validate` (each key exists,
each value survives the command line; stage 2's own runs are validated again
once the selection has fixed them); the dev split must not be the test
split, and stage 1 and stage 2 runs of a point may differ only in the seed
and the eval split. Runs are launched with `experiments.sweep.launch` (one
process per run; a run whose results.json exists is skipped), so rerunning
the same command resumes: it finishes stage 1, selects, runs stage 2 and
reports. With `--launcher=slurm|tpu` each stage writes its script and stops;
run it, then rerun this command (the stage's results must be visible here).

Disk: as each local run finishes, its `best/` is deleted (the run's scores
come from its final state, not from the best-on-eval checkpoint), and a
stage-1 trial's `checkpoints/` too. A stage-2 run keeps `checkpoints/`: the
tested model, for `bert_jax.predict` / `export`, and the state a copy of
the run resumes from to be evaluated again. results.json, predictions and
logs stay. 117 MiniLM runs would otherwise keep about 40 GB.
`--keep_checkpoints` keeps everything.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import pathlib
import shutil
import sys
from typing import Any, Optional, Sequence

from experiments import launchers
from experiments import sweep as sweep_lib

# Keys whose values may differ between a point's stage-1 and stage-2 runs.
STAGE_KEYS = ('seed', 'data.eval', 'data.eval_split', 'data.max_eval_examples')
# Numbers closer than this are a tie in the selection.
TIE_TOL = 1e-12
MIN_FINAL_SEEDS = 3


class TuneError(sweep_lib.SweepError):
  """A protocol that must not start, or a stage that cannot proceed."""


@dataclasses.dataclass
class Plan:
  """The protocol of one config, expanded."""
  path: str
  arg: str                                  # the runs' config arg
  spec: dict[str, Any]
  trials: dict[str, list[dict[str, Any]]]   # variant -> trial overrides

  @property
  def spec_str(self) -> str:
    return sweep_lib.join_spec(self.path, self.arg)

  def metric(self, variant: str) -> str:
    return self.spec['variants'][variant].get('metric') or self.spec['metric']


# ------------------------------------------------------------ the spec
_FIELDS = ('config_arg', 'metric', 'dev', 'test', 'tuning_seeds',
           'final_seeds', 'baseline', 'variants')


def check_spec(spec: dict[str, Any], where: str) -> None:
  """Raises TuneError naming every problem of a `tune(arg)` result."""
  missing = [f for f in _FIELDS if f not in spec]
  if missing:
    raise TuneError(f'{where}: tune() lacks {missing}; it must return '
                    f'{list(_FIELDS)}')
  errors = []
  variants = spec['variants']
  if not variants:
    errors.append('no variants')
  if spec['baseline'] not in variants:
    errors.append(f"baseline {spec['baseline']!r} is not a variant; variants: "
                  f'{list(variants)}')
  for key in ('tuning_seeds', 'final_seeds'):
    seeds = list(spec[key])
    if not seeds or len(set(seeds)) != len(seeds) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds):
      errors.append(f'{key}={seeds!r}: need distinct integers')
  if len(spec['final_seeds']) < MIN_FINAL_SEEDS:
    errors.append(f"final_seeds={list(spec['final_seeds'])}: at least "
                  f'{MIN_FINAL_SEEDS} (seed variance needs them)')
  dev, test = dict(spec['dev']), dict(spec['test'])
  if 'data.eval_split' not in dev or 'data.eval_split' not in test:
    errors.append("dev and test must each set 'data.eval_split'")
  elif (dev['data.eval_split'] == test['data.eval_split']
        and dev.get('data.eval') == test.get('data.eval')):
    errors.append(f"the dev split is the test split "
                  f"({dev['data.eval_split']!r}): selecting on test and "
                  'reporting test is not a held-out result')
  elif dev['data.eval_split'] == 'test':
    errors.append("dev split 'test': trials must never be scored on test")
  counts = {}
  for name, v in variants.items():
    unknown = set(v) - {'fixed', 'search', 'metric'}
    if unknown:
      errors.append(f'variant {name!r}: unknown fields {sorted(unknown)}')
      continue
    if not v.get('search') or not all(v['search']):
      errors.append(f'variant {name!r}: search needs non-empty axes')
      continue
    clash = set(v.get('fixed', {})) & {k for ax in v['search'] for d in ax
                                       for k in d}
    clash |= (set(v.get('fixed', {})) | {k for ax in v['search'] for d in ax
                                         for k in d}) & (set(dev) | set(test)
                                                         | {'seed'})
    if clash:
      errors.append(f'variant {name!r}: keys set twice (fixed, search, seed '
                    f'or the dev/test overrides): {sorted(clash)}')
    counts[name] = len(expand_trials(v))
  if len(set(counts.values())) > 1:
    errors.append(f'variants have different numbers of trials {counts}: the '
                  'comparison is fair only with the same tuning budget each')
  if errors:
    raise TuneError(f'{where}: ' + '; '.join(errors) + '; nothing was run')


def expand_trials(variant: dict[str, Any]) -> list[dict[str, Any]]:
  """A variant's trials: `fixed` merged with each point of the product of
  its search axes (the first axis varying slowest)."""
  points = sweep_lib.product(*variant['search'])
  return [dict(variant.get('fixed', {}), **p) for p in points]


def load_plan(spec: str, smoke: bool = False):
  """-> (Plan, module) for `--config=path:arg`."""
  path, arg = sweep_lib.split_spec(spec, smoke)
  module = sweep_lib.load_module(path)
  fn = getattr(module, 'tune', None)
  if fn is None:
    raise TuneError(f'{path} has no tune(arg)')
  try:
    data = fn() if arg is None else fn(arg)
  except Exception as e:  # pylint: disable=broad-except
    raise TuneError(f'{sweep_lib.join_spec(path, arg)}: tune() failed: '
                    f'{type(e).__name__}: {e}') from e
  data = copy.deepcopy(data)
  check_spec(data, sweep_lib.join_spec(path, arg))
  trials = {name: expand_trials(v) for name, v in data['variants'].items()}
  return Plan(path, data['config_arg'], data, trials), module


# ------------------------------------------------------------ runs
@dataclasses.dataclass
class Entry:
  variant: str
  trial: int                 # index into plan.trials[variant]
  seed: int
  run: sweep_lib.Run
  probe: str = ''            # stage 2: a histogram probe's label


def _named(items: Sequence[tuple[str, int, int, dict[str, Any], str]],
           extra: dict[str, Any]) -> list[Entry]:
  """Entries named from their variant's overrides and seed (`extra`, the
  stage's eval overrides, is added after naming: the stage directory says
  it)."""
  overrides = [dict(o, seed=seed) for _, _, seed, o, _ in items]
  runs = sweep_lib.name_runs(overrides)
  for run in runs:
    run.overrides.update(extra)
  return [Entry(v, t, s, r, probe)
          for (v, t, s, _, probe), r in zip(items, runs)]


def stage1_entries(plan: Plan) -> list[Entry]:
  """Every trial x tuning seed; seed-major, so a partial stage 1 already
  has every trial of the first seed."""
  items = [(v, t, seed, o, '') for seed in plan.spec['tuning_seeds']
           for v, trials in plan.trials.items() for t, o in enumerate(trials)]
  return _named(items, dict(plan.spec['dev']))


def stage2_entries(plan: Plan, selected: dict[str, int],
                   probes: Sequence[tuple[str, str, int]] = ()) -> list[Entry]:
  """Each variant's selected trial x final seeds; then each histogram probe
  (label, variant, trial) with the first final seed."""
  seeds = plan.spec['final_seeds']
  items = [(v, selected[v], seed, plan.trials[v][selected[v]], '')
           for seed in seeds for v in plan.trials if v in selected]
  items += [(v, t, seeds[0], plan.trials[v][t], label)
            for label, v, t in probes]
  return _named(items, dict(plan.spec['test']))


def _flat(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _eval_source(config: dict[str, Any]) -> tuple:
  d = config['data']
  return (d.get('eval') or d.get('train'), d.get('eval_split'),
          d.get('dev_from_train') if d.get('eval_split') == 'dev_from_train'
          else None)


def validate(plan: Plan, module) -> list[Entry]:
  """Validates stage 1 and a sample of stage 2; returns stage 1's entries."""
  stage1 = stage1_entries(plan)
  sweep_lib.validate(plan.path, plan.arg, [e.run for e in stage1], module)
  sample = stage2_entries(plan, {v: 0 for v in plan.trials})
  sweep_lib.validate(plan.path, plan.arg, [e.run for e in sample], module)
  first = {(e.variant, e.trial): e for e in reversed(stage1)}
  errors = []
  for e in sample:
    dev = first[(e.variant, e.trial)].run.config
    test = e.run.config
    if _eval_source(dev) == _eval_source(test):
      errors.append(f'{e.variant}: its dev runs evaluate on the test data '
                    f'{_eval_source(test)}')
    a, b = _flat(dev), _flat(test)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                    and k not in STAGE_KEYS
                    and k not in sweep_lib.EXECUTION_ONLY)
    if differ:
      errors.append(f'{e.variant}: stage 1 and stage 2 of one point differ in '
                    f'{differ} (only {list(STAGE_KEYS)} may)')
  if errors:
    raise TuneError('the protocol is not held out:\n  ' + '\n  '.join(
        sorted(set(errors))))
  return stage1


# ------------------------------------------------------------ selection
def read_results(path: pathlib.Path) -> Optional[dict[str, Any]]:
  f = path / 'results.json'
  if not f.exists():
    return None
  results = json.loads(f.read_text())
  return results if results.get('final_eval') else None


def dev_table(plan: Plan, stage1: Sequence[Entry], stage_dir: pathlib.Path
              ) -> list[dict[str, Any]]:
  """One row per stage-1 run: variant, trial, seed, run, dev (None: not
  finished), dev_loss (the dev `ce_loss`, the tie-break; None if absent)."""
  rows = []
  for e in stage1:
    results = read_results(stage_dir / e.run.name)
    value = loss = None
    if results is not None:
      metric = plan.metric(e.variant)
      if metric not in results['final_eval']:
        raise TuneError(f'{stage_dir / e.run.name}: no dev metric {metric!r}; '
                        f'it has {sorted(results["final_eval"])}')
      value = float(results['final_eval'][metric])
      loss = results['final_eval'].get('ce_loss')
    rows.append(dict(variant=e.variant, trial=e.trial, seed=e.seed,
                     run=e.run.name, dev=value,
                     dev_loss=None if loss is None else float(loss)))
  return rows


def select(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Per variant, the trial with the best dev metric averaged over seeds.

  Args:
    rows: dicts with `variant`, `trial` (its index in the declared search
      order), `seed`, `dev` (the metric; None = the run did not finish) and
      optionally `dev_loss` (the dev cross-entropy).

  Returns:
    variant -> dict(trial, dev (the mean), means: {trial: mean}).
    A non-finite mean never wins (it is -inf in the comparison). Ties (within
    1e-12; small dev sets tie often, e.g. every trial that predicts only
    the majority class) go to the lower mean `dev_loss` where every tied
    trial has a finite one, then to the lowest trial index, i.e. the
    earliest in the config.

  Raises:
    TuneError: a run has no result yet, or a variant's trials have different
      seeds.
  """
  missing = [r['run'] for r in rows if r['dev'] is None]
  if missing:
    raise TuneError(f'{len(missing)} stage-1 run(s) have no result: '
                    f'{missing[:5]}')
  by_variant: dict[str, dict[int, dict[int, float]]] = {}
  losses: dict[tuple[str, int], list] = {}
  for r in rows:
    by_variant.setdefault(r['variant'], {}).setdefault(r['trial'], {})[
        r['seed']] = r['dev']
    losses.setdefault((r['variant'], r['trial']), []).append(
        r.get('dev_loss'))
  out = {}
  for variant, trials in by_variant.items():
    seed_sets = {tuple(sorted(s)) for s in trials.values()}
    if len(seed_sets) != 1:
      raise TuneError(f'{variant}: trials have different tuning seeds '
                      f'{sorted(seed_sets)}')
    means = {t: float(sum(s.values()) / len(s)) for t, s in trials.items()}
    score = {t: m if math.isfinite(m) else -math.inf for t, m in means.items()}
    best = max(score.values())
    tied = sorted(t for t, m in score.items() if m >= best - TIE_TOL)
    loss = {t: _mean_finite(losses[(variant, t)]) for t in tied}
    if len(tied) > 1 and all(l is not None for l in loss.values()):
      tied = [t for t in tied if loss[t] <= min(loss.values()) + TIE_TOL]
    trial = tied[0]
    out[variant] = dict(trial=trial, dev=means[trial], means=means)
  return out


def _mean_finite(values) -> Optional[float]:
  """The mean of `values`, None unless every one is a finite number."""
  if not values or any(v is None or not math.isfinite(v) for v in values):
    return None
  return float(sum(values) / len(values))


def histogram_probes(plan: Plan, selection: dict[str, dict[str, Any]]
                     ) -> list[tuple[str, str, int]]:
  """(label, variant, trial) for each histogram entry whose variant is in
  the plan and whose selected point does not already match `point`: the
  best trial of that variant among those matching it."""
  probes = []
  for label, variant, point in plan.spec.get('histogram', ()):
    if variant not in plan.trials:
      continue
    trials = plan.trials[variant]
    chosen = selection[variant]['trial']
    if all(trials[chosen].get(k) == v for k, v in point.items()):
      continue
    matching = [t for t, o in enumerate(trials)
                if all(o.get(k) == v for k, v in point.items())]
    if not matching:
      raise TuneError(f'histogram entry {label!r}: no trial of {variant} has '
                      f'{point}')
    means = selection[variant]['means']
    best = max(means[t] for t in matching)
    probes.append((label, variant,
                   min(t for t in matching if means[t] >= best - TIE_TOL)))
  return probes


# ------------------------------------------------------------ launching
def _launch(args, plan: Plan, entries: Sequence[Entry], stage_dir) -> int:
  runs = [e.run for e in entries]
  for i, run in enumerate(runs):   # launchers index dirs by run.index
    run.index = i
  stage_args = copy.copy(args)
  stage_args.workdir = str(stage_dir)
  if args.launcher == 'tpu' and args.remote_workdir:
    stage_args.remote_workdir = f'{args.remote_workdir.rstrip("/")}/{stage_dir.name}'
  if args.compilation_cache_dir == '' and not args.no_compilation_cache:
    # One cache for both stages: stage 2 compiles what stage 1 did.
    base = args.remote_workdir or args.workdir if args.launcher == 'tpu' else (
        str(pathlib.Path(args.workdir).resolve()))
    stage_args.compilation_cache_dir = f'{base.rstrip("/")}/compilation_cache'
  on_ok = None if args.keep_checkpoints else functools.partial(
      prune_finished_run, keep_final=stage_dir.name == 'stage2')
  return sweep_lib.launch(stage_args, plan.spec_str, runs, on_ok=on_ok)


def prune_finished_run(run_dir: pathlib.Path, keep_final: bool) -> None:
  """Deletes a finished run's `best/`, and its `checkpoints/` unless
  `keep_final`. A run without results.json is left whole (it may be
  resumed)."""
  if read_results(run_dir) is None:
    return
  for name in ['best'] + ([] if keep_final else ['checkpoints']):
    shutil.rmtree(run_dir / name, ignore_errors=True)


def _finished(entries: Sequence[Entry], stage_dir: pathlib.Path) -> bool:
  return all(read_results(stage_dir / e.run.name) is not None for e in entries)


def _write_json(path: pathlib.Path, data: Any) -> None:
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, default=str))
  tmp.replace(path)


def run(args) -> int:
  """The protocol, as far as it can go now; 0 when the report is written
  (or a script was written for a scheduler), 1 when runs failed."""
  plan, module = load_plan(args.config, args.smoke)
  stage1 = validate(plan, module)
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _write_json(workdir / 'tune.json', dict(
      config=plan.spec_str, spec=plan.spec, trials=plan.trials,
      selection_rule='per variant, the trial with the highest dev metric '
      'averaged over the tuning seeds; ties (within 1e-12) go to the lower '
      'mean dev cross-entropy, then to the earliest trial in the declared '
      'search order'))
  n2 = len(plan.trials) * len(plan.spec['final_seeds'])
  print(f'{plan.spec_str}: {len(plan.trials)} variants x '
        f'{len(next(iter(plan.trials.values())))} trials x '
        f"{len(plan.spec['tuning_seeds'])} tuning seed(s) = {len(stage1)} "
        f"stage-1 runs on {plan.spec['dev']}; then {n2} stage-2 runs on "
        f"{plan.spec['test']}", flush=True)
  s1 = workdir / 'stage1'
  if args.dry_run or not _finished(stage1, s1):
    rc = _launch(args, plan, stage1, s1)
    if args.dry_run or args.launcher != 'local':
      if args.launcher != 'local':
        print('stage 1: run the script, then rerun this command for stage 2')
      return rc
    if not _finished(stage1, s1):
      print('stage 1 is incomplete (see above); rerun to resume',
            file=sys.stderr)
      return 1
  rows = dev_table(plan, stage1, s1)
  selection = select(rows)
  probes = histogram_probes(plan, selection)
  _write_json(workdir / 'selection.json', dict(
      metric={v: plan.metric(v) for v in plan.trials}, rows=rows,
      selected={v: dict(trial=s['trial'], dev=s['dev'],
                        point=plan.trials[v][s['trial']])
                for v, s in selection.items()},
      probes=[dict(label=l, variant=v, trial=t) for l, v, t in probes]))
  stage2 = stage2_entries(plan, {v: s['trial'] for v, s in selection.items()},
                          probes)
  # Sets each run's config: the launcher compares it with a finished run's
  # and gives the runs the shared compilation cache.
  sweep_lib.validate(plan.path, plan.arg, [e.run for e in stage2], module)
  s2 = workdir / 'stage2'
  if not _finished(stage2, s2):
    rc = _launch(args, plan, stage2, s2)
    if args.launcher != 'local':
      print('stage 2: run the script, then rerun this command for the report')
      return rc
    if not _finished(stage2, s2):
      print('stage 2 is incomplete (see above); rerun to resume',
            file=sys.stderr)
      return 1
  from experiments import tune_report  # pylint: disable=g-import-not-at-top
  out = tune_report.write_report(workdir, plan, rows, selection, stage2,
                                 num_resamples=args.num_resamples)
  print(out.read_text())
  print(f'wrote {out}')
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', required=True,
                 help='config file with tune(arg) and get_config(arg), e.g. '
                 'configs/ablation.py:drug_reviews')
  p.add_argument('--workdir', required=True)
  p.add_argument('--smoke', action='store_true',
                 help="append ',smoke' to the config arg (tiny model)")
  p.add_argument('--parallel', type=int, default=1)
  p.add_argument('--dry_run', action='store_true',
                 help='validate, write stage 1 and print its commands')
  p.add_argument('--launcher', choices=('local', 'slurm', 'tpu'),
                 default='local')
  p.add_argument('--python', default=None)
  p.add_argument('--compilation_cache_dir', default='')
  p.add_argument('--no_compilation_cache', action='store_true')
  p.add_argument('--keep_checkpoints', action='store_true',
                 help="keep each finished run's checkpoints/ and best/ "
                 "(by default deleted, but for stage 2's checkpoints/)")
  p.add_argument('--num_resamples', type=int, default=2000,
                 help='two-level bootstrap replicates')
  launchers.add_flags(p)
  args = p.parse_args(argv)
  if args.parallel < 1:
    p.error('--parallel must be >= 1')
  try:
    return run(args)
  except sweep_lib.SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  from experiments import tune as _tune  # pylint: disable=g-import-not-at-top
  sys.exit(_tune.main())
