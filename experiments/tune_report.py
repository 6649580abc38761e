"""The tune-then-test report: `<workdir>/report.md`, `report.json`, plots.

Written by `experiments.tune` once both stages have finished:
  * header: the budget (the runs' max length, train / eval subset sizes,
    steps, batch), the dev and test overrides, seeds, the selection rule;
  * per variant: the grid with each trial's dev score, the selected point,
    its dev score, test mean ± std over the final seeds, and the difference
    from the baseline with a 95% two-level bootstrap interval (seeds and
    test examples resampled, crossed; `experiments.stats`), its
    two-sided bootstrap p-value and the Holm-Bonferroni adjusted p-value
    across the variants; "significant" means p_holm <= 0.05;
  * plots: per-class F1 by variant, dev score against each hyperparameter,
    and the histogram of the gold-class probability on test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np

from bert_jax.model import BertConfig
from experiments import report as report_lib
from experiments import stats
from experiments import sweep as sweep_lib

ALPHA = 0.05


def _run_result(path: pathlib.Path, name: str, overrides) -> report_lib.RunResult:
  return report_lib.RunResult(
      name, dict(overrides), path,
      json.loads((path / 'results.json').read_text()),
      report_lib._read_jsonl(path / 'predictions.jsonl'))  # pylint: disable=protected-access


def _fmt(x, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return '—'
  return f'{x:.{digits}f}'


def _point(overrides: dict[str, Any], fixed: dict[str, Any]) -> str:
  varied = {k: v for k, v in overrides.items() if k not in fixed}
  return ', '.join(f'{k}={sweep_lib.format_value(v)}' for k, v in
                   varied.items()) or '(fixed)'


def budget(run: report_lib.RunResult) -> dict[str, Any]:
  c = run.results['config']
  d = c['data']
  return dict(max_seq_length=d.get('max_seq_length'),
              max_train_examples=d.get('max_train_examples') or 'all',
              max_eval_examples=d.get('max_eval_examples') or 'all',
              dev_from_train=d.get('dev_from_train') or 0,
              steps=run.results.get('final_step'),
              batch_size=c.get('batch_size'),
              init_from=c['model'].get('init_from') or '(random init)',
              model=_fresh_model_size(c['model']))


def _fresh_model_size(model: dict[str, Any]):
  """{hidden, layers} of a fresh model: what config.model sets, else
  BertConfig's defaults. None with init_from (the pretrained directory's
  config.json sets them, not the run's config)."""
  if model.get('init_from'):
    return None

  def size(key):
    value = model.get(key)
    return getattr(BertConfig, key) if value is None else value
  return dict(hidden=size('hidden_size'), layers=size('num_hidden_layers'))


def compare(groups: dict[str, report_lib.Group], baseline: str,
            metric_of: dict[str, str], *, num_resamples: int, seed: int = 0
            ) -> dict[str, dict[str, Any]]:
  """Per non-baseline variant: diff of the test metric (seed means), the
  two-level and the example-only 95% intervals, p and Holm's p."""
  base = groups[baseline]
  scorer = report_lib.scorer_for(base.runs[0])
  out = {}
  if scorer is None:
    return {v: dict(problem='no predictions.jsonl / unknown task')
            for v in groups if v != baseline}
  guids = [r['guid'] for r in base.runs[0].predictions]
  base_stats = report_lib.example_stats(base, guids, scorer)
  for variant, g in groups.items():
    if variant == baseline:
      continue
    key = metric_of[variant].removeprefix('adjusted_')
    own = report_lib.example_stats(g, guids, scorer)
    problem = own if isinstance(own, str) else (
        base_stats if isinstance(base_stats, str) else None)
    if problem:
      out[variant] = dict(problem=problem)
      continue
    _, metric_fn = scorer
    full_a = [metric_fn(s.sum(0, keepdims=True))[key][0] for s in own]
    full_b = [metric_fn(s.sum(0, keepdims=True))[key][0] for s in base_stats]
    seeds_a = [r.overrides.get('seed') for r in g.runs]
    seeds_b = [r.overrides.get('seed') for r in base.runs]
    paired = seeds_a == seeds_b
    kw = dict(num_resamples=num_resamples, seed=seed, paired_seeds=paired)
    both = stats.two_level_bootstrap(own, base_stats, metric_fn, **kw)[key]
    ex = stats.two_level_bootstrap(own, base_stats, metric_fn,
                                   levels='examples', **kw)[key]
    out[variant] = dict(
        metric=key, diff=float(np.mean(full_a) - np.mean(full_b)),
        ci=list(stats.percentile_interval(both)),
        ci_examples_only=list(stats.percentile_interval(ex)),
        p=stats.bootstrap_p(both), paired_seeds=paired)
  names = [v for v in out if 'p' in out[v]]
  adjusted = stats.holm([out[v]['p'] for v in names])
  for v, p in zip(names, adjusted):
    out[v]['p_holm'] = float(p)
    out[v]['significant'] = bool(p <= ALPHA)
  return out


def per_class_f1(group: report_lib.Group) -> dict[str, list[float]]:
  """class -> [mean, sample std] of the test F1 over the group's runs
  (`f1/<class>` of each run's final eval; std nan for one run)."""
  runs = [report_lib.scalar_metrics(r.final_eval) for r in group.runs]
  keys = sorted({k for r in runs for k in r if k.startswith('f1/')})
  return {k[len('f1/'):]: list(report_lib.mean_std(
      [r.get(k, math.nan) for r in runs])[:2]) for k in keys}


# ------------------------------------------------------------ plots
def _scored(group: report_lib.Group, metric: str) -> report_lib.Group:
  """A post-hoc variant (metric `adjusted_*`) with its adjusted per-class
  F1 as `f1/<class>`, so the per-class plot shows what it is scored on."""
  if not metric.startswith('adjusted_'):
    return group
  runs = []
  for r in group.runs:
    ev = dict(r.final_eval)
    ev.update({k[len('adjusted_'):]: v for k, v in r.final_eval.items()
               if k.startswith('adjusted_f1/')})
    runs.append(dataclasses.replace(r, results=dict(r.results,
                                                    final_eval=ev)))
  return report_lib.Group(group.name, group.overrides, runs)


def plot_dev_vs_hparams(plan, rows, selection, path) -> pathlib.Path:
  """One panel per (variant, swept key): dev mean vs the key's value, a
  line per value of the other keys; the selected trial ringed."""
  plt = report_lib._plt()  # pylint: disable=protected-access
  panels = []
  for v, trials in plan.trials.items():
    fixed = plan.spec['variants'][v].get('fixed', {})
    keys = [k for k in trials[0] if k not in fixed
            and len({json.dumps(t.get(k)) for t in trials}) > 1]
    for k in keys:
      panels.append((v, k, keys))
  cols = min(4, max(1, len(panels)))
  rows_n = max(1, math.ceil(len(panels) / cols))
  fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 2.9 * rows_n),
                           squeeze=False)
  for ax, (v, k, keys) in zip(axes.flat, panels):
    means = selection[v]['means']
    trials = plan.trials[v]
    lines = {}
    for t, o in enumerate(trials):
      rest = ', '.join(f'{j}={sweep_lib.format_value(o[j])}' for j in keys
                       if j != k)
      lines.setdefault(rest, []).append((o[k], means[t], t))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool)
                  for pts in lines.values() for x, _, _ in pts)
    order = sorted({json.dumps(x) for pts in lines.values() for x, _, _ in pts})
    for rest, pts in lines.items():
      pts = sorted(pts, key=lambda p: p[0] if numeric else json.dumps(p[0]))
      xs = [p[0] if numeric else order.index(json.dumps(p[0])) for p in pts]
      ax.plot(xs, [p[1] for p in pts], marker='o', label=rest, lw=1)
      for x, (_, m, t) in zip(xs, pts):
        if t == selection[v]['trial']:
          ax.plot([x], [m], 'o', ms=12, mfc='none', mec='red')
    if numeric and k.endswith('lr'):
      ax.set_xscale('log')
    if not numeric:
      ax.set_xticks(range(len(order)), [json.loads(o) for o in order],
                    fontsize=7)
    ax.set_title(f'{v}: dev vs {k}', fontsize=8)
    ax.set_xlabel(k, fontsize=8)
    ax.grid(alpha=0.3)
    if any(lines):
      ax.legend(fontsize=6)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  fig.suptitle('Dev score (mean over tuning seeds) vs each hyperparameter; '
               'red ring: selected', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def has_gold_probs(run: report_lib.RunResult) -> bool:
  """Whether the run's predictions carry class probabilities (classification:
  `probs` per example; tagging without a CRF: `gold_probs` per word)."""
  return bool(run.predictions) and ('probs' in run.predictions[0] or
                                    'gold_probs' in run.predictions[0])


def gold_probs(run: report_lib.RunResult) -> np.ndarray:
  """The softmax probability of the gold class of every test example, or
  (tagging) of every test word the model tagged whose gold tag is not `O`,
  float64 [N]. `O` words, most of an NER test set, would swamp the plot."""
  if 'gold_probs' in run.predictions[0]:
    return np.asarray([p for r in run.predictions
                       for p, g in zip(r['gold_probs'], r['gold'])
                       if p is not None and g != 'O'], np.float64)
  names = list(run.final_eval['per_class'])
  index = {n: i for i, n in enumerate(names)}
  return np.asarray([r['probs'][index[r['label']]] for r in run.predictions])


def plot_gold_prob(entries: Sequence[tuple[str, list]], path):
  plt = report_lib._plt()  # pylint: disable=protected-access
  fig, axes = plt.subplots(1, len(entries), figsize=(3.8 * len(entries), 3.2),
                           squeeze=False, sharey=True)
  bins = np.linspace(0, 1, 21)
  for ax, (label, runs) in zip(axes[0], entries):
    p = np.concatenate([gold_probs(r) for r in runs])
    ax.hist(p, bins=bins, color='C0', alpha=0.8)
    ax.set_title(f'{label} ({len(runs)} seed(s))', fontsize=8)
    ax.set_xlabel('p(gold class) on test')
    ax.axvline(0.5, color='gray', ls=':', lw=1)
  axes[0][0].set_ylabel('test examples (tagging: non-O words)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ------------------------------------------------------------ report
def write_report(workdir, plan, rows, selection, stage2, *,
                 num_resamples: int = 2000, seed: int = 0) -> pathlib.Path:
  workdir = pathlib.Path(workdir)
  s2 = workdir / 'stage2'
  spec = plan.spec
  groups: dict[str, report_lib.Group] = {}
  probes: dict[str, list] = {}
  for e in stage2:
    r = _run_result(s2 / e.run.name, e.run.name,
                    {k: v for k, v in e.run.overrides.items()
                     if k not in spec['test']})
    if e.probe:
      probes.setdefault(e.probe, []).append(r)
    else:
      groups.setdefault(e.variant, report_lib.Group(e.variant, {}, []))
      groups[e.variant].runs.append(r)
  baseline = spec['baseline']
  metric_of = {v: plan.metric(v) for v in plan.trials}
  cmp = compare(groups, baseline, metric_of, num_resamples=num_resamples,
                seed=seed)
  first = next(iter(groups.values())).runs[0]
  b = budget(first)
  n_test = len(first.predictions or [])
  dev_rows = {}
  for r in rows:
    dev_rows.setdefault((r['variant'], r['trial']), []).append(r['dev'])

  test = {}
  for v, g in groups.items():
    values = [float(r.final_eval[metric_of[v]]) for r in g.runs]
    m, s = stats.mean_std(values)
    test[v] = dict(metric=metric_of[v], mean=m, std=s, n=len(values),
                   seeds=[r.overrides.get('seed') for r in g.runs],
                   values=values)
  n_trials = len(next(iter(plan.trials.values())))
  lines = [
      f'# Tune-then-test report: {workdir.name}', '',
      f'Config: `{plan.spec_str}`; task `{first.results.get("task")}`.',
      f"**Budget:** max_seq_length {b['max_seq_length']}, train examples "
      f"{b['max_train_examples']}, eval examples {b['max_eval_examples']}, "
      f"dev_from_train {b['dev_from_train']}, {b['steps']} steps of batch "
      f"{b['batch_size']}, model {b['init_from']}"
      + (f" ({b['model']['layers']} layers, hidden {b['model']['hidden']})."
         if b['model'] else '.'),
      f"**Protocol:** {len(plan.trials)} variants x {n_trials} trials "
      f"(the same for every variant) x tuning seeds {spec['tuning_seeds']}, "
      f"scored on dev `{spec['dev']}`; per variant the trial with the best "
      f"mean dev `{spec['metric']}` (ties within 1e-12: the lower mean dev "
      f"cross-entropy, then the earliest trial in the declared order) is "
      f"trained with final seeds "
      f"{spec['final_seeds']} and evaluated once on test `{spec['test']}` "
      f'({n_test} examples).',
      f"**Intervals:** difference from `{baseline}` in the test metric "
      f'(mean over final seeds), 95% two-level bootstrap ({num_resamples} '
      'replicates, each resampling the final seeds (paired by seed where '
      'both have the same seeds) and the test examples (one draw shared by '
      'all seeds and both systems: every seed is scored on the same test '
      'set)); "examples only" keeps the seeds fixed; p: two-sided, '
      '2 min(P(d <= 0), P(d >= 0)) with the +1 correction; p_holm: '
      f'Holm-Bonferroni over the {len(cmp)} comparisons. **Bold**: '
      f'significant after adjustment (p_holm <= {ALPHA}).',
      '']
  lines += ['## Result', '']
  header = ['variant', 'selected point', f'dev', f'test (mean ± std, n)',
            'Δ vs baseline [95% CI]', 'p', 'p_holm', 'CI, examples only']
  table = []
  for v in plan.trials:
    fixed = spec['variants'][v].get('fixed', {})
    t = selection[v]['trial']
    te = test.get(v)
    c = cmp.get(v, {})
    if v == baseline:
      delta = '(baseline)'
      cells = ['', '', '']
    elif 'problem' in c:
      delta, cells = f"n/a: {c['problem']}", ['', '', '']
    else:
      delta = (f"{c['diff']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]")
      if c['significant']:
        delta = f'**{delta}**'
      cells = [f"{c['p']:.4f}", f"{c['p_holm']:.4f}",
               f"[{c['ci_examples_only'][0]:+.4f}, "
               f"{c['ci_examples_only'][1]:+.4f}]"]
    name = v + ('' if metric_of[v] == spec['metric']
                else f' ({metric_of[v]})')
    table.append([f'`{name}`', _point(plan.trials[v][t], fixed),
                  _fmt(selection[v]['dev']),
                  f"{_fmt(te['mean'])} ± {_fmt(te['std'])}, {te['n']}"
                  if te else '—', delta] + cells)
  lines += report_lib._table(header, table)  # pylint: disable=protected-access
  lines += ['', '## Grids (dev score per trial, mean over tuning seeds)', '']
  for v, trials in plan.trials.items():
    fixed = spec['variants'][v].get('fixed', {})
    fixed_text = ', '.join(f'{k}={sweep_lib.format_value(x)}'
                           for k, x in fixed.items())
    lines.append(f'- `{v}` ({fixed_text}): ' + '; '.join(
        ('**' if t == selection[v]['trial'] else '') +
        f"{_point(o, fixed)}: {_fmt(selection[v]['means'][t])}" +
        ('**' if t == selection[v]['trial'] else '')
        for t, o in enumerate(trials)))

  scored = {v: _scored(g, metric_of[v]) for v, g in groups.items()}
  per_class = {v: per_class_f1(g) for v, g in scored.items()}
  classes = sorted({c for pc in per_class.values() for c in pc})
  if classes:
    lines += ['', '## Per-class F1 on test (mean ± std over the final seeds; '
              'post-hoc variants: their adjusted predictions)', '']
    lines += report_lib._table(  # pylint: disable=protected-access
        ['variant'] + classes,
        [[f'`{v}`'] + [f'{_fmt(per_class[v][c][0], 3)} ± '
                       f'{_fmt(per_class[v][c][1], 3)}'
                       if c in per_class[v] else '—' for c in classes]
         for v in plan.trials if v in per_class])

  plots = []
  p = report_lib.plot_per_class(
      list(scored.values()),
      workdir / 'per_class_f1.png', f"{len(spec['final_seeds'])} final seeds")
  if p:
    plots.append(('Per-class F1 on test by variant (post-hoc variants: '
                  'their adjusted predictions)', p))
  plots.append(('Dev score vs each hyperparameter', plot_dev_vs_hparams(
      plan, rows, selection, workdir / 'dev_vs_hparams.png')))
  hist = []
  for label, variant, point in spec.get('histogram', ()):
    runs = probes.get(label) or (groups[variant].runs if variant in groups and
                                 label not in probes else None)
    if runs and all(has_gold_probs(r) for r in runs):
      hist.append((label, runs))
  if hist:
    plots.append(('Gold-class probability on test', plot_gold_prob(
        hist, workdir / 'gold_prob_hist.png')))
    if probes:
      lines += ['', 'Histogram probes (trained for the histogram only, first '
                'final seed, not compared): ' + ', '.join(
                    f'`{k}`' for k in probes) + '.']
  lines += ['', '## Plots', '']
  for title, p in plots:
    lines += [f'### {title}', '', f'![{title}]({p.name})', '']

  report_json = dict(
      config=plan.spec_str, budget=b, metric=spec['metric'],
      baseline=baseline, tuning_seeds=spec['tuning_seeds'],
      final_seeds=spec['final_seeds'], num_resamples=num_resamples,
      groups={v: dict(
          grid=[dict(point=o, dev=selection[v]['means'][t],
                     dev_seeds=dev_rows.get((v, t)))
                for t, o in enumerate(plan.trials[v])],
          selected=plan.trials[v][selection[v]['trial']],
          dev=selection[v]['dev'], test=test.get(v),
          per_class_f1=per_class.get(v))
              for v in plan.trials},
      differences=cmp)
  (workdir / 'report.json').write_text(json.dumps(report_json, indent=2,
                                                  default=str))
  out = workdir / 'report.md'
  out.write_text('\n'.join(lines) + '\n')
  return out

