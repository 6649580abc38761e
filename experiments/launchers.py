"""Where a sweep's runs go: here (`local`), a SLURM job array, a TPU pod slice.

`local` runs each run as its own subprocess, N at a time, and records how
each ended in `<workdir>/sweep_status.json`. `slurm` and `tpu` only write a
script and print how to start it; they schedule nothing themselves. A run is
anything with an `index` and a `name` (`sweep.Run`) and its argv; which runs
exist and what they compute is `experiments.sweep`'s business
(`sweep.launch` calls these).

Every command is an argv list. `local` execs it without a shell; the scripts
write each element through `shlex.quote`, so a config value such as
`x; rm -rf ~` stays one argument and is never run.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

RESULTS = 'results.json'
LOG = 'train.log'


class LaunchError(ValueError):
  """A launcher option that cannot go into a script (names the option)."""


def add_flags(p) -> None:
  g = p.add_argument_group('slurm')
  g.add_argument('--sbatch_option', action='append', default=[],
                 help='extra #SBATCH line, e.g. --sbatch_option=--gres=gpu:1 '
                 '(repeatable)')
  g.add_argument('--job_name', default='', help='SLURM job name')
  g = p.add_argument_group('tpu')
  g.add_argument('--tpu', default='', help='TPU VM name (else $TPU when the '
                 'script runs)')
  g.add_argument('--zone', default='', help='its zone (else $ZONE)')
  g.add_argument('--remote_repo', default='bert_jax',
                 help='checkout of this repo on the TPU workers')
  g.add_argument('--remote_workdir', default='',
                 help='sweep directory as the workers see it (gs://... or a '
                 'shared disk); default --workdir')


# ------------------------------------------------------------ local
def _tail(path: pathlib.Path, n: int = 3) -> list[str]:
  try:
    lines = path.read_text(errors='replace').splitlines()
  except OSError:
    return []
  return [l for l in lines if l.strip()][-n:]


def run_local(runs, argvs, dirs: Sequence[pathlib.Path], *, parallel: int,
              status_path: pathlib.Path, poll_s: float = 0.2,
              cwd: Optional[str] = None,
              on_ok: Optional[Callable[[pathlib.Path], None]] = None
              ) -> list[dict[str, Any]]:
  """Runs every run without results.json, `parallel` at a time; a failure
  is recorded and the others go on. `on_ok(run_dir)` is called as each run
  finishes with its results. Returns one outcome dict per run."""
  outcomes: list[Optional[dict[str, Any]]] = [None] * len(runs)
  pending = []
  for run, argv, d in zip(runs, argvs, dirs):
    if (d / RESULTS).exists():
      outcomes[run.index] = dict(name=run.name, status='skipped',
                                 reason='results.json exists', log=str(d / LOG))
    else:
      pending.append((run, argv, d))
  active = {}   # index -> (Popen, log file, start time)

  def record():
    done = [o for o in outcomes if o is not None]
    status_path.write_text(json.dumps(done, indent=2))

  def finish(index, rc):
    proc, log, start = active.pop(index)
    log.close()
    run, d = runs[index], dirs[index]
    if rc == 0 and (d / RESULTS).exists():
      status = 'ok'
      if on_ok is not None:
        try:
          on_ok(d)
        except Exception as e:  # pylint: disable=broad-except
          print(f'[{index}] {run.name}: after the run: {e!r}', file=sys.stderr)
    elif rc == 0:   # e.g. preempted: a checkpoint, no results; rerun resumes
      status = 'incomplete'
    else:
      status = 'failed'
    outcomes[index] = dict(name=run.name, status=status, returncode=rc,
                           log=str(d / LOG), seconds=round(time.time() - start, 1))
    print(f'[{index}] {run.name}: {status}'
          + (f' (exit {rc}; log {d / LOG})' if status != 'ok' else
             f' in {outcomes[index]["seconds"]:.0f}s'), flush=True)
    record()

  try:
    while pending or active:
      while pending and len(active) < parallel:
        run, argv, d = pending.pop(0)
        d.mkdir(parents=True, exist_ok=True)
        log = open(d / LOG, 'a')
        log.write(f'\n=== {time.strftime("%Y-%m-%d %H:%M:%S")} '
                  f'{" ".join(shlex.quote(a) for a in argv)}\n')
        log.flush()
        # Own session: Ctrl-C reaches the sweep only, which then sends each
        # run SIGTERM (the trainer checkpoints and exits).
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd,
                                start_new_session=True)
        active[run.index] = (proc, log, time.time())
        print(f'[{run.index}] {run.name}: started', flush=True)
      for index in list(active):
        rc = active[index][0].poll()
        if rc is not None:
          finish(index, rc)
      time.sleep(poll_s if active else 0)
  except KeyboardInterrupt:
    print('interrupted: sending SIGTERM to the running runs', file=sys.stderr)
    for proc, _, _ in active.values():
      proc.send_signal(signal.SIGTERM)
    for index in list(active):
      finish(index, active[index][0].wait())
    raise
  record()
  return outcomes


def summary(outcomes, workdir: pathlib.Path) -> str:
  counts = {}
  for o in outcomes:
    counts[o['status']] = counts.get(o['status'], 0) + 1
  lines = [f'sweep {workdir}: {len(outcomes)} runs: ' + ', '.join(
      f'{n} {s}' for s, n in sorted(counts.items()))]
  for o in outcomes:
    if o['status'] in ('failed', 'incomplete'):
      lines.append(f"  {o['status'].upper()} {o['name']}: exit "
                   f"{o['returncode']}, log {o['log']}")
      lines += [f'      | {l}' for l in _tail(pathlib.Path(o['log']))]
  lines.append('Rerun the same command to retry failed/incomplete runs; '
               f'report: python -m experiments.report {shlex.quote(str(workdir))}')
  return '\n'.join(lines)


# ------------------------------------------------------------ slurm
def _check_line(text: str, what: str) -> str:
  if '\n' in text or '\r' in text:
    raise LaunchError(f'{what} must be one line: {text!r}')
  return text


def write_slurm(workdir: pathlib.Path, runs, argvs, dirs, *, parallel: int,
                job_name: str, options: Sequence[str]) -> pathlib.Path:
  """`workdir/sweep.sbatch`: one array index per run (index = run.index)."""
  q = shlex.quote
  logs = workdir / 'slurm'
  logs.mkdir(parents=True, exist_ok=True)
  # --parallel=N caps the tasks running at once; by default SLURM decides.
  throttle = f'%{parallel}' if parallel > 1 else ''
  lines = [
      '#!/bin/bash',
      f'#SBATCH --job-name={q(_check_line(job_name, "--job_name"))}',
      f'#SBATCH --array=0-{len(runs) - 1}{throttle}',
      f'#SBATCH --output={q(str(logs / "%A_%a.out"))}',
  ] + [f'#SBATCH {q(_check_line(o, "--sbatch_option"))}' for o in options] + [
      '# Written by experiments.sweep; runs and overrides: sweep.json.',
      '# Resubmitting skips runs whose results.json exists.',
      'set -euo pipefail',
      f'cd {q(os.getcwd())}',
      'case "${SLURM_ARRAY_TASK_ID:?submit with sbatch}" in',
  ]
  for run, argv, d in zip(runs, argvs, dirs):
    lines.append(f'  {run.index})  # {_check_line(run.name, "run name")}')
    lines.append(f'    RUN={q(d)}')
    lines.append(f'    CMD=({shlex.join(argv)}) ;;')
  lines += [
      '  *) echo "no run with index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
      'esac',
      'if [ -e "$RUN/results.json" ]; then',
      '  echo "$RUN: results.json exists, skipping"; exit 0',
      'fi',
      'mkdir -p "$RUN"',
      'echo "=== $(date "+%F %T") job $SLURM_JOB_ID.$SLURM_ARRAY_TASK_ID" '
      '>>"$RUN/train.log"',
      '"${CMD[@]}" >>"$RUN/train.log" 2>&1',
  ]
  path = workdir / 'sweep.sbatch'
  path.write_text('\n'.join(lines) + '\n')
  return path


# ------------------------------------------------------------ tpu
# On the workers, skip a finished run; tf.io.gfile reads gs:// and local paths.
_EXISTS = ('import sys, tensorflow as tf; '
           'sys.exit(0 if tf.io.gfile.exists(sys.argv[1]) else 1)')


def remote_command(argv: Sequence[str], run_dir: str, repo: str) -> str:
  """The shell command each worker runs for one run (quoted for the
  worker's shell)."""
  python = argv[0]
  check = shlex.join([python, '-c', _EXISTS, f'{run_dir}/{RESULTS}'])
  return (f'cd {shlex.quote(repo)} && '
          f'{{ {check} 2>/dev/null && echo {shlex.quote(run_dir)}: done, '
          f'skipping || {shlex.join(argv)}; }}')


def write_tpu(workdir: pathlib.Path, runs, argvs, dirs, *, tpu: str, zone: str,
              repo: str) -> pathlib.Path:
  """`workdir/sweep_tpu.sh`: the runs one after another, each on every
  worker of the slice (`gcloud ... --worker=all --command "..."`)."""
  q = shlex.quote
  lines = [
      '#!/bin/bash',
      '# Written by experiments.sweep: one run at a time on the whole pod',
      '# slice; a failed run is reported and the next one starts.',
      'set -u',
      f'TPU=${{TPU:-{q(tpu)}}}' if tpu else ': "${TPU:?set TPU to the TPU VM name}"',
      f'ZONE=${{ZONE:-{q(zone)}}}' if zone else ': "${ZONE:?set ZONE}"',
      'failed=0',
  ]
  for run, argv, d in zip(runs, argvs, dirs):
    text = ('gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" '
            f'--worker=all --command {q(remote_command(argv, d, repo))}')
    lines.append(f'echo {q(f"[{run.index}] {run.name}")}')
    lines.append(f'{text} || {{ echo {q(f"FAILED: {run.name}")} >&2; '
                 'failed=$((failed + 1)); }')
  lines.append('echo "$failed run(s) failed"; exit $((failed > 0))')
  path = workdir / 'sweep_tpu.sh'
  path.write_text('\n'.join(lines) + '\n')
  return path
