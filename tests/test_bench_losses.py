"""experiments/bench_losses.py: a quick run prints the table it documents."""

import sys

import pytest

from experiments import bench_losses


def test_quick_run_prints_ratio_rows_for_the_selected_losses(monkeypatch,
                                                              capsys):
  monkeypatch.setattr(sys, 'argv', [
      'bench_losses', '--repeats', '2', '--inner', '1', '--cost',
      '--only', '^focal, gamma=2$'])
  bench_losses.main()
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines() if line.startswith('| focal')]
  # One timing row and one cost row, each with a ratio per shape/metric.
  assert len(rows) == 2, out
  assert rows[0].count('x |') == len(bench_losses.SHAPES), rows[0]
  assert rows[1].count('x |') == 3, rows[1]
  assert '| plain CE (optax), µs/pass |' in out
  assert 'ghm' not in out


def test_only_that_matches_nothing_names_the_rows(monkeypatch, capsys):
  monkeypatch.setattr(sys, 'argv', ['bench_losses', '--only', 'focall'])
  with pytest.raises(SystemExit):
    bench_losses.main()
  assert 'matches no row' in capsys.readouterr().err
