r"""Training and eval curves of one run, from its results.json, as a PNG.

  python -m experiments.plot_run WORKDIR [--out=curves.png] [--metrics=mlm_accuracy,nsp_accuracy]

One panel per metric: the training curve (logged every `log_every` steps)
and, where the run evaluated, the eval curve; a dashed line marks the
`eval/<metric>_majority_baseline` when the run reports one.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top


def curves(history: list[dict], key: str) -> tuple[list, list]:
  points = [(h['step'], h[key]) for h in history if key in h]
  return [s for s, _ in points], [v for _, v in points]


def plot(workdir: pathlib.Path, out: pathlib.Path, metrics: list[str]) -> pathlib.Path:
  results = json.loads((workdir / 'results.json').read_text())
  history = results['train_history']
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6),
                           squeeze=False)
  for ax, name in zip(axes[0], metrics):
    for key, label, style in ((name, 'train', '-'), (f'eval/{name}', 'held-out', 'o-')):
      steps, values = curves(history, key)
      if steps:
        ax.plot(steps, values, style, label=label, markersize=4)
    base_key = f'eval/{name.replace("accuracy", "majority_baseline")}'
    steps, values = curves(history, base_key)
    if steps and base_key != f'eval/{name}':
      ax.axhline(values[-1], color='grey', linestyle='--',
                 label='most-frequent-token baseline')
    ax.set_title(name.replace('_', ' '))
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f'{results["task"]}: {workdir.name}')
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m experiments.plot_run')
  p.add_argument('workdir')
  p.add_argument('--out', default='')
  p.add_argument('--metrics', default='loss,mlm_accuracy,nsp_accuracy')
  args = p.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  out = pathlib.Path(args.out or workdir / 'curves.png')
  print(plot(workdir, out, [m for m in args.metrics.split(',') if m]))
  return 0


if __name__ == '__main__':
  sys.exit(main())
