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


def test_shapes_replace_the_default_columns(monkeypatch, capsys):
  monkeypatch.setattr(sys, 'argv', [
      'bench_losses', '--repeats', '1', '--inner', '1', '--only', '^dsc',
      '--shapes', '16x5, 4x3x24'])
  bench_losses.main()
  out = capsys.readouterr().out
  assert '| loss | baseline | [16,5] | [4,3,24] |' in out, out
  row = next(line for line in out.splitlines() if line.startswith('| dsc'))
  assert row.count('x |') == 2, row


@pytest.mark.parametrize('bad', ['64x', '64x1', '0x9', '9', 'ax9', '64x9,,3x3'])
def test_bad_shapes_are_an_error_that_names_the_item(bad, monkeypatch,
                                                     capsys):
  monkeypatch.setattr(sys, 'argv', ['bench_losses', '--shapes', bad])
  with pytest.raises(SystemExit):
    bench_losses.main()
  assert 'is not a logits shape like 64x128x9' in capsys.readouterr().err


def test_parse_shapes():
  assert bench_losses.parse_shapes('64x128x9,256x3') == {
      '[64,128,9]': (64, 128, 9), '[256,3]': (256, 3)}
