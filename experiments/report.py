r"""Aggregates a sweep directory into `report.md`, `report.json` and plots.

  python -m experiments.report workdirs/ablation [--baseline=ce]

Reads every run's `results.json` (its `final_eval`) and `predictions.jsonl`,
groups the runs by their overrides without the seed, and writes:
  * one row per group: mean ± sample std (ddof=1) over seeds of every scalar
    eval metric, with the number of seeds;
  * for each group, a paired bootstrap 95% CI of its difference from the
    baseline group on the same eval examples: predictions are paired by
    guid, the eval examples are resampled with replacement (the same
    resamples for both systems), the metric is recomputed on each resample
    for every seed of each system and averaged over seeds, and the 2.5 /
    97.5 percentiles of the difference are reported; a CI that excludes 0
    is marked. Metrics: accuracy, macro-F1 and minority-class F1
    (classification), span F1 (tagging), EM and F1 (span QA);
  * PNGs: per-class F1 by group, metric vs each swept numeric
    hyperparameter, training-loss curves.
`--baseline` names a group (its full name, e.g. `loss=ce`) or a value: the
group with the fewest overrides that has that value (default `ce`: plain
cross-entropy).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import pathlib
import re
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

from experiments import sweep as sweep_lib

# Integer bookkeeping in final_eval (counts, sizes), not metrics.
_NOT_METRICS = re.compile(r'(^|_)(num|total|truncated|windows)(_|$)|'
                          r'words_without_tokens|^support$')
HEADLINE = ('accuracy', 'macro_f1', 'minority_f1', 'adjusted_accuracy',
            'adjusted_macro_f1', 'adjusted_minority_f1', 'span_f1',
            'span_macro_f1', 'adjusted_span_f1', 'exact_match', 'f1',
            'macro_f1_excl_other', 'adjusted_macro_f1_excl_other',
            'seg_f1', 'adjusted_seg_f1', 'token_accuracy')


@dataclasses.dataclass
class RunResult:
  name: str
  overrides: dict[str, Any]
  path: pathlib.Path
  results: dict[str, Any]
  predictions: Optional[list[dict[str, Any]]]

  @property
  def final_eval(self) -> dict[str, Any]:
    return self.results.get('final_eval') or {}


@dataclasses.dataclass
class Group:
  name: str
  overrides: dict[str, Any]           # without the seed
  runs: list[RunResult]


# ------------------------------------------------------------ loading
def _read_jsonl(path: pathlib.Path) -> Optional[list[dict[str, Any]]]:
  if not path.exists():
    return None
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _flat(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def load_runs(sweep_dir: pathlib.Path):
  """-> (finished runs, problems: [(run name, why)]) in sweep order."""
  sweep_json = sweep_dir / 'sweep.json'
  status = {}
  if (sweep_dir / 'sweep_status.json').exists():
    status = {o['name']: o for o in
              json.loads((sweep_dir / 'sweep_status.json').read_text())}
  if sweep_json.exists():
    entries = [(r['name'], r['overrides'])
               for r in json.loads(sweep_json.read_text())['runs']]
  else:   # a directory of runs: overrides = the config fields that differ
    dirs = sorted(p.parent for p in sweep_dir.glob('*/results.json'))
    configs = [_flat(json.loads((d / 'results.json').read_text())['config'])
               for d in dirs]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys
               if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    entries = [(d.name, {k: c.get(k) for k in varying})
               for d, c in zip(dirs, configs)]
  runs, problems = [], []
  for name, overrides in entries:
    path = sweep_dir / name
    if not (path / 'results.json').exists():
      why = status.get(name, {}).get('status', 'not run')
      if why in ('failed', 'incomplete'):
        why += f" (exit {status[name].get('returncode')}, log {status[name]['log']})"
      problems.append((name, why))
      continue
    results = json.loads((path / 'results.json').read_text())
    if not results.get('final_eval'):
      problems.append((name, 'results.json has no final eval'))
      continue
    runs.append(RunResult(name, overrides, path, results,
                          _read_jsonl(path / 'predictions.jsonl')))
  return runs, problems


def group_runs(runs: Sequence[RunResult]) -> list[Group]:
  short = sweep_lib.short_keys(k for r in runs for k in r.overrides)
  groups: dict[str, Group] = {}
  for r in runs:
    rest = {k: v for k, v in r.overrides.items() if k != sweep_lib.SEED_KEY}
    key = json.dumps(sorted(rest.items()), default=str)
    if key not in groups:
      groups[key] = Group(sweep_lib.run_name(rest, short), rest, [])
    groups[key].runs.append(r)
  return list(groups.values())


def find_baseline(groups: Sequence[Group], spec: str) -> Group:
  for g in groups:
    if g.name == spec:
      return g
  having = [g for g in groups if any(
      sweep_lib.format_value(v) == spec or sweep_lib.name_value(v) == spec
      for v in g.overrides.values())]
  fewest = min((len(g.overrides) for g in having), default=None)
  best = [g for g in having if len(g.overrides) == fewest]
  if len(best) != 1:
    raise ValueError(f'--baseline={spec!r} matches {len(best)} groups '
                     f'{[g.name for g in best]}; give a full group name, one '
                     f'of {[g.name for g in groups]}')
  return best[0]


# ------------------------------------------------------------ statistics
def scalar_metrics(final_eval: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in final_eval.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)
          and not _NOT_METRICS.search(k)}


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
  """Mean and sample std (ddof=1; nan for one value) of finite values."""
  x = np.asarray([v for v in values if v is not None and math.isfinite(v)],
                 np.float64)
  if not len(x):
    return math.nan, math.nan, 0
  return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def resample_counts(n: int, num_resamples: int, seed: int) -> np.ndarray:
  """[B, n] multiplicities of the eval examples in B bootstrap resamples."""
  rng = np.random.default_rng(seed)
  counts = np.zeros((num_resamples, n), np.float64)
  for b in range(num_resamples):
    counts[b] = np.bincount(rng.integers(0, n, n), minlength=n)
  return counts


# A scorer turns one run's predictions (rows in guid order) into per-example
# statistics [n, K] whose weighted sums give the metrics: counts @ stats ->
# [B, K] -> {metric: [B]}.
Scorer = tuple[Callable[[list[dict]], np.ndarray],
               Callable[[np.ndarray], dict[str, np.ndarray]]]


def _div(num, den):
  return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64),
                   where=den != 0)


def classification_scorer(classes: Sequence[str], minority: str,
                          field: str = 'prediction') -> Scorer:
  """Accuracy, macro-F1 and minority-class F1 as `bert_jax.metrics` computes
  them (macro over classes present in the gold or predicted labels)."""
  index = {c: i for i, c in enumerate(classes)}
  c = len(classes)

  def stats(rows):
    y = np.eye(c)[[index[r['label']] for r in rows]]
    p = np.eye(c)[[index[r[field]] for r in rows]]
    return np.concatenate([y, p, y * p], axis=1)

  def metrics(sums):
    support, tp, f1, present = _per_class(sums, c)
    return dict(accuracy=tp.sum(1) / support.sum(1),
                macro_f1=(f1 * present).sum(1) / present.sum(1),
                minority_f1=f1[:, index[minority]])
  return stats, metrics


def _per_class(sums, c: int):
  """[B, 3C] summed (gold, predicted, correct) one-hots -> support, true
  positives, F1 and "present in gold or predictions", each [B, C]."""
  support, predicted, tp = sums[:, :c], sums[:, c:2 * c], sums[:, 2 * c:]
  return (support, tp, _div(2 * tp, support + predicted),
          (support > 0) | (predicted > 0))


def relation_scorer(classes: Sequence[str], other: Optional[str]) -> Scorer:
  """Accuracy, macro-F1 and macro-F1 without the no-relation label, as
  `bert_jax.tasks.relation.relation_metrics` computes them (both macros over
  the classes present in the gold or predicted labels)."""
  stats, base_metrics = classification_scorer(classes, classes[0])
  c = len(classes)
  rest = np.asarray([n != other for n in classes])

  def metrics(sums):
    out = base_metrics(sums)
    del out['minority_f1']
    _, _, f1, present = _per_class(sums, c)
    keep = present & rest
    out['macro_f1_excl_other'] = _div((f1 * keep).sum(1), keep.sum(1))
    return out
  return stats, metrics


def tagging_scorer(scheme: str) -> Scorer:
  """Per-sentence counts of the tagging task's own metric for `scheme` (a
  canonical name, `bert_jax.tasks.tagging.resolve_scheme`):
    span schemes: strict micro span F1 (`span_f1`, `metrics.span_f1`);
    segmentation (`seg_*`): word F1 (`seg_f1`, `metrics.segmentation_scores`);
    'none' (POS): token accuracy (`token_accuracy`)."""
  from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import tagging  # pylint: disable=g-import-not-at-top

  scheme = tagging.SCHEMES.get(scheme.upper(), scheme)
  if scheme == 'none':
    def token_stats(rows):
      return np.asarray([(sum(g == p for g, p in zip(r['gold'], r['pred'])),
                          len(r['gold'])) for r in rows], np.float64)

    def token_metrics(sums):
      return dict(token_accuracy=_div(sums[:, 0], sums[:, 1]))
    return token_stats, token_metrics

  segmentation = tagging.scheme_kind(scheme) == 'segmentation'
  if segmentation:
    def units(tags):
      return set(metrics_lib.segment_words(tags, tagging.SEGMENTATION[scheme]))
  else:
    def units(tags):
      return set(metrics_lib.extract_spans(tags, scheme))

  def stats(rows):
    out = []
    for r in rows:
      gold, pred = units(r['gold']), units(r['pred'])
      out.append((len(gold), len(pred), len(gold & pred)))
    return np.asarray(out, np.float64)

  name = 'seg_f1' if segmentation else 'span_f1'

  def metrics(sums):
    return {name: _div(2 * sums[:, 2], sums[:, 0] + sums[:, 1])}
  return stats, metrics


def span_qa_scorer() -> Scorer:
  """SQuAD EM / F1 in percent, per question."""
  from bert_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top

  def stats(rows):
    return np.asarray([metrics_lib.squad_em_f1(r['prediction'], r['gold']) + (1.0,)
                       for r in rows], np.float64)

  def metrics(sums):
    return dict(exact_match=100 * sums[:, 0] / sums[:, 2],
                f1=100 * sums[:, 1] / sums[:, 2])
  return stats, metrics


def scorer_for(run: RunResult) -> Optional[Scorer]:
  task, ev = run.results.get('task'), run.final_eval
  rows = run.predictions or []
  if task == 'classification' and 'per_class' in ev and rows:
    return classification_scorer(list(ev['per_class']), ev['minority_class'])
  if task == 'tagging' and rows:
    from bert_jax.tasks import tagging  # pylint: disable=g-import-not-at-top
    tags = sorted({t for r in rows for t in r['gold'] + r['pred']})
    scheme = run.results['config'].get('data', {}).get('scheme', 'auto')
    return tagging_scorer(tagging.resolve_scheme(scheme, tags, str(run.path)))
  if task == 'span_qa' and rows:
    return span_qa_scorer()
  if task == 'relation' and 'per_class' in ev and rows:
    from bert_jax.tasks import relation  # pylint: disable=g-import-not-at-top
    classes = list(ev['per_class'])
    configured = run.results['config'].get('other_label', '')
    return relation_scorer(classes,
                           relation.other_label(classes, configured))
  return None


def _scored_field(g: Group) -> str:
  """The predictions.jsonl field the task's scorer reads."""
  return 'pred' if g.runs[0].results.get('task') == 'tagging' else 'prediction'


def _prediction_field(g: Group) -> Optional[str]:
  """The predictions.jsonl field holding this group's predictions. Post-hoc
  logit adjustment changes only the adjusted_* metrics: its predictions are
  `adjusted_<field>` where written, else unavailable (None)."""
  field = _scored_field(g)
  tau = g.runs[0].results['config'].get('eval_logit_adjustment_tau') or 0
  if not tau:
    return field
  rows = g.runs[0].predictions or [{}]
  return f'adjusted_{field}' if f'adjusted_{field}' in rows[0] else None


def example_stats(group: Group, guids: Sequence[str], scorer: Scorer):
  """Per run of `group`, the scorer's per-example statistics `[n, K]` of its
  predictions in `guids` order (post-hoc adjusted predictions where the
  group adjusts), or a string saying why they cannot be had."""
  stats_fn, _ = scorer
  field, scored = _prediction_field(group), _scored_field(group)
  if field is None:
    return ('post-hoc adjusted predictions are not in predictions.jsonl (see '
            'the adjusted_* metrics)')
  out = []
  for run in group.runs:
    if not run.predictions:
      return f'{run.name}: no predictions.jsonl'
    by_guid = {r['guid']: r for r in run.predictions}
    if set(by_guid) != set(guids) or len(by_guid) != len(run.predictions):
      return f'{run.name}: its eval examples differ from the baseline\'s'
    rows = [by_guid[g] for g in guids]
    if field != scored:
      rows = [dict(r, **{scored: r[field]}) for r in rows]
    out.append(stats_fn(rows))
  return out


class Bootstrap:
  """Paired bootstrap of seed-averaged metric differences against a baseline."""

  def __init__(self, baseline: Group, num_resamples: int = 1000, seed: int = 0):
    self.baseline = baseline
    self.scorer = scorer_for(baseline.runs[0])
    self.guids = None
    self.problem = None
    if self.scorer is None:
      self.problem = 'no predictions.jsonl for the baseline (or unknown task)'
      return
    self.guids = [r['guid'] for r in baseline.runs[0].predictions]
    if len(set(self.guids)) != len(self.guids):
      self.problem = 'duplicate guids in predictions.jsonl'
      return
    self.counts = resample_counts(len(self.guids), num_resamples, seed)
    self.ones = np.ones((1, len(self.guids)))
    self.base = self._system(baseline)

  def _system(self, group: Group):
    """-> ({metric: [B]} averaged over seeds, {metric: full-set value}) or a
    reason why the group cannot be paired with the baseline."""
    _, metric_fn = self.scorer
    per_seed, full = [], []
    all_stats = example_stats(group, self.guids, self.scorer)
    if isinstance(all_stats, str):
      return all_stats
    for stats in all_stats:
      per_seed.append(metric_fn(self.counts @ stats))
      full.append(metric_fn(self.ones @ stats))
    avg = {k: np.mean([s[k] for s in per_seed], axis=0) for k in per_seed[0]}
    return avg, {k: float(np.mean([f[k][0] for f in full])) for k in full[0]}

  def compare(self, group: Group) -> dict[str, Any]:
    """{metric: dict(diff, lo, hi, excludes_zero)} or {'problem': why}."""
    if self.problem:
      return {'problem': self.problem}
    if _prediction_field(group) is None:
      return {'problem': 'post-hoc adjusted predictions are not in '
                         'predictions.jsonl (see the adjusted_* metrics)'}
    system = self._system(group)
    if isinstance(system, str):
      return {'problem': system}
    (samples, full), (base_samples, base_full) = system, self.base
    out = {}
    for k in samples:
      diff = samples[k] - base_samples[k]
      lo, hi = np.percentile(diff, [2.5, 97.5])
      out[k] = dict(diff=full[k] - base_full[k], lo=float(lo), hi=float(hi),
                    excludes_zero=bool(lo > 0 or hi < 0))
    return out

  def check(self, group: Group) -> list[str]:
    """Runs whose predictions do not reproduce their results.json metrics."""
    bad = []
    if self.problem or _prediction_field(group) != _scored_field(group):
      return bad
    stats_fn, metric_fn = self.scorer
    for run in group.runs:
      by_guid = {r['guid']: r for r in run.predictions or []}
      if set(by_guid) != set(self.guids):
        continue
      got = metric_fn(self.ones @ stats_fn([by_guid[g] for g in self.guids]))
      for k, v in got.items():
        want = run.final_eval.get(k)
        if isinstance(want, (int, float)) and abs(float(v[0]) - want) > 1e-6:
          bad.append(f'{run.name}: {k} from predictions.jsonl {float(v[0]):.6f}'
                     f' != results.json {want:.6f}')
    return bad


# ------------------------------------------------------------ plots
def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_per_class(groups, path, n_seeds_note) -> Optional[pathlib.Path]:
  keys = [k for k in scalar_metrics(groups[0].runs[0].final_eval)
          if k.startswith('f1/')]
  if not keys:
    return None
  plt = _plt()
  x = np.arange(len(groups))
  width = 0.8 / len(keys)
  fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(groups) + 2), 4.8))
  for i, key in enumerate(keys):
    stats = [mean_std([scalar_metrics(r.final_eval).get(key, math.nan)
                       for r in g.runs]) for g in groups]
    ax.bar(x + (i - (len(keys) - 1) / 2) * width, [s[0] for s in stats], width,
           yerr=[0 if math.isnan(s[1]) else s[1] for s in stats], capsize=3,
           label=key.split('/', 1)[1])
  ax.set_xticks(x, [g.name for g in groups], fontsize=8, rotation=30,
                ha='right')
  ax.set_ylabel('F1 on the eval set')
  ax.set_ylim(0, 1.05)
  ax.set_title(f'Per-class F1 by group (mean ± std over {n_seeds_note})')
  ax.legend(title='class', fontsize=8, loc='upper left',
            bbox_to_anchor=(1.0, 1.0))
  ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def swept_numeric_keys(groups) -> dict[str, list[list[Group]]]:
  """key -> families of groups that differ only in that numeric key (>= 2
  values), e.g. 'loss.gamma' -> [[focal gamma=1, focal gamma=2]]."""
  out = collections.defaultdict(list)
  keys = {k for g in groups for k, v in g.overrides.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}
  for key in sorted(keys):
    families = collections.defaultdict(list)
    for g in groups:
      v = g.overrides.get(key)
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        rest = json.dumps(sorted((k, x) for k, x in g.overrides.items()
                                 if k != key), default=str)
        families[rest].append(g)
    for family in families.values():
      if len({g.overrides[key] for g in family}) >= 2:
        out[key].append(sorted(family, key=lambda g: g.overrides[key]))
  return dict(out)


def plot_vs_hparam(key, families, metrics, baseline, path):
  plt = _plt()
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8),
                           squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for family in families:
      xs = [g.overrides[key] for g in family]
      st = [mean_std([scalar_metrics(r.final_eval).get(metric, math.nan)
                      for r in g.runs]) for g in family]
      rest = {k: v for k, v in family[0].overrides.items() if k != key}
      label = ','.join(f'{k}={sweep_lib.format_value(v)}' for k, v in rest.items())
      ax.errorbar(xs, [s[0] for s in st], capsize=3, marker='o',
                  yerr=[0 if math.isnan(s[1]) else s[1] for s in st],
                  label=label or key)
    if baseline is not None:
      m, s, _ = mean_std([scalar_metrics(r.final_eval).get(metric, math.nan)
                          for r in baseline.runs])
      ax.axhline(m, color='gray', ls='--', label=f'baseline {baseline.name}')
      if not math.isnan(s):
        ax.axhspan(m - s, m + s, color='gray', alpha=0.15)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f'{metric} vs {key}')
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.suptitle('mean ± std over seeds; dashed: baseline (band: ± std)',
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_train_loss(groups, path) -> Optional[pathlib.Path]:
  curves = []
  for g in groups:
    runs = [[(h['step'], h['loss']) for h in r.results.get('train_history', [])
             if 'loss' in h] for r in g.runs]
    curves.append([c for c in runs if c])
  if not any(curves):
    return None
  plt = _plt()
  cols = min(4, len(groups))
  rows = math.ceil(len(groups) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows),
                           sharex=True, squeeze=False)
  for ax, g, runs in zip(axes.flat, groups, curves):
    for i, c in enumerate(runs):
      steps, loss = zip(*c)
      ax.plot(steps, loss, lw=1, alpha=0.8,
              label=f"seed {g.runs[i].overrides.get('seed', '?')}")
    ax.set_title(g.name, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  for ax in axes.flat[len(groups):]:
    ax.axis('off')
  for ax in axes[:, 0]:
    ax.set_ylabel('training loss')
  for col in range(cols):   # the lowest plot of each column gets the x axis
    ax = axes[(len(groups) - 1 - col) // cols, col] if col < len(groups) else None
    if ax is not None:
      ax.xaxis.set_tick_params(labelbottom=True)
      ax.set_xlabel('step')
  fig.suptitle('Training loss per group (each loss on its own scale)')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# ------------------------------------------------------------ report
def _fmt(x: float, digits: int = 4) -> str:
  return '—' if x is None or math.isnan(x) else f'{x:.{digits}f}'


def _pm(values) -> str:
  m, s, n = mean_std(values)
  if n == 0:
    return '—'
  return _fmt(m) if n == 1 else f'{_fmt(m)} ± {_fmt(s)}'


def _table(header, rows) -> list[str]:
  return (['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
          + ['| ' + ' | '.join(r) + ' |' for r in rows])


def _order_metrics(names) -> list[str]:
  head = [m for m in HEADLINE if m in names]
  per = sorted(m for m in names if m.startswith('f1/'))
  return head + per + sorted(set(names) - set(head) - set(per))


def write_report(sweep_dir, baseline: str = 'ce', num_resamples: int = 1000,
                 seed: int = 0) -> pathlib.Path:
  sweep_dir = pathlib.Path(sweep_dir)
  runs, problems = load_runs(sweep_dir)
  if not runs:
    raise ValueError(f'{sweep_dir}: no run has a results.json with an eval; '
                     f'problems: {problems}')
  groups = group_runs(runs)
  try:
    base = find_baseline(groups, baseline)
    groups.remove(base)
    groups.insert(0, base)
    base_note = None
  except ValueError as e:
    base, base_note = None, str(e)
  metrics = _order_metrics({k for r in runs for k in scalar_metrics(r.final_eval)})
  headline = [m for m in metrics if m in HEADLINE or m.startswith('f1/')]
  seeds = sorted({len(g.runs) for g in groups})
  seeds_note = ('/'.join(map(str, seeds))) + ' seed' + ('s' if seeds != [1] else '')
  ev = runs[0].final_eval
  lines = [f'# Sweep report: {sweep_dir.name}', '',
           f'{len(runs)} finished runs in {len(groups)} groups '
           f'({seeds_note} each); task `{runs[0].results.get("task")}`; '
           f'metrics of the final eval (step {runs[0].results.get("final_step")}).'
           f' Mean ± sample std (ddof=1) over seeds.']
  sweep_json = sweep_dir / 'sweep.json'
  if sweep_json.exists():
    lines.append(f"Config: `{json.loads(sweep_json.read_text())['config']}`.")
  if 'minority_class' in ev:
    lines.append(f"minority_f1 is the F1 of `{ev['minority_class']}`, the "
                 'rarest training class.')
  if problems:
    lines += ['', f'**{len(problems)} run(s) missing from the tables:**', '']
    lines += [f'- `{n}`: {why}' for n, why in problems]
  if len(seeds) > 1:
    lines += ['', '**Groups have different numbers of seeds** (column n).']

  lines += ['', '## Headline metrics', '']
  lines += _table(['group', 'n'] + headline, [
      [f'`{g.name}`' + (' (baseline)' if g is base else ''), str(len(g.runs))]
      + [_pm([scalar_metrics(r.final_eval).get(m, math.nan) for r in g.runs])
         for m in headline] for g in groups])

  comparisons = {}
  lines += ['', f'## Paired bootstrap vs baseline', '']
  if base is None:
    lines.append(f'No baseline: {base_note}')
  else:
    boot = Bootstrap(base, num_resamples, seed)
    cmp_metrics = []
    for g in groups[1:]:
      comparisons[g.name] = boot.compare(g)
      cmp_metrics += [k for k in comparisons[g.name] if k != 'problem'
                      and k not in cmp_metrics]
    n_eval = len(boot.guids or [])
    lines.append(
        f'Difference from `{base.name}` (group − baseline, seed-averaged), '
        f'with the 95% CI of a paired bootstrap over the {n_eval} eval examples '
        f'({num_resamples} resamples, seed {seed}, paired by guid). **Bold**: '
        'the CI excludes 0.')
    if boot.problem:
      lines.append(f'Not computed: {boot.problem}.')
    lines.append('')
    rows, notes = [], []
    for g in groups[1:]:
      c = comparisons[g.name]
      cells = []
      for m in cmp_metrics:
        if 'problem' in c:
          cells.append(f'n/a ({len(notes) + 1})')
          continue
        d = c[m]
        text = f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
        cells.append(f'**{text}**' if d['excludes_zero'] else text)
      if 'problem' in c:
        notes.append(f"({len(notes) + 1}) `{g.name}`: {c['problem']}.")
      rows.append([f'`{g.name}`', str(len(g.runs))] + cells)
    lines += _table(['group', 'n'] + [f'Δ {m}' for m in cmp_metrics], rows)
    lines += [''] + notes if notes else []
    mismatches = [m for g in groups for m in boot.check(g)]
    if mismatches:
      lines += ['', '**predictions.jsonl disagrees with results.json:**', '']
      lines += [f'- {m}' for m in mismatches]

  lines += ['', '## All scalar metrics', '']
  lines += _table(['group', 'n'] + metrics, [
      [f'`{g.name}`', str(len(g.runs))]
      + [_pm([scalar_metrics(r.final_eval).get(m, math.nan) for r in g.runs])
         for m in metrics] for g in groups])

  plots = []
  p = plot_per_class(groups, sweep_dir / 'per_class_f1.png', seeds_note)
  if p:
    plots.append(('Per-class F1', p))
  plot_metrics = [m for m in headline if not m.startswith('f1/')][:3]
  for key, families in swept_numeric_keys(groups).items():
    if key == sweep_lib.SEED_KEY or not plot_metrics:
      continue
    name = re.sub(r'[^A-Za-z0-9]+', '_', key)
    plots.append((f'Metrics vs {key}', plot_vs_hparam(
        key, families, plot_metrics, base, sweep_dir / f'vs_{name}.png')))
  p = plot_train_loss(groups, sweep_dir / 'train_loss.png')
  if p:
    plots.append(('Training loss', p))
  lines += ['', '## Plots', '']
  for title, p in plots:
    lines += [f'### {title}', '', f'![{title}]({p.name})', '']

  (sweep_dir / 'report.json').write_text(json.dumps(dict(
      baseline=base.name if base else None, missing=problems,
      groups={g.name: dict(
          overrides=g.overrides, runs=[r.name for r in g.runs],
          metrics={m: dict(zip(('mean', 'std', 'n'), mean_std(
              [scalar_metrics(r.final_eval).get(m, math.nan) for r in g.runs])))
                   for m in metrics},
          vs_baseline=comparisons.get(g.name)) for g in groups}),
      indent=2, default=str))
  out = sweep_dir / 'report.md'
  out.write_text('\n'.join(lines) + '\n')
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('workdir', help='sweep directory (of experiments.sweep)')
  p.add_argument('--baseline', default='ce',
                 help="group name (e.g. 'loss=ce') or a value its overrides "
                 "hold (default 'ce')")
  p.add_argument('--num_resamples', type=int, default=1000)
  p.add_argument('--seed', type=int, default=0, help='bootstrap seed')
  args = p.parse_args(argv)
  try:
    out = write_report(args.workdir, args.baseline, args.num_resamples, args.seed)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(out.read_text())
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
