"""Framework-free helpers of `experiments.benchmark`: sizes, batches, memory,
timing and Markdown.

Nothing here imports JAX, PyTorch or transformers: the benchmark runs every
implementation in its own process (see benchmark.py), and each of those
imports only the framework it measures, so one framework's thread pools and
allocator never share a process with another's.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

# Encoder sizes. `seq` and `batch` are the default shapes of the main table;
# `tiny` exists for the smoke test only (it is not BERT-like at all).
SIZES = {
    'tiny': dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                 intermediate_size=64, vocab_size=512, seq=16, batch=2),
    'small': dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                  intermediate_size=1024, vocab_size=30522, seq=128, batch=16),
    'minilm': dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                   intermediate_size=1536, vocab_size=30522, seq=128, batch=16),
    'base': dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                 intermediate_size=3072, vocab_size=30522, seq=128, batch=32),
    'large': dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                  intermediate_size=4096, vocab_size=30522, seq=128, batch=32),
}
GPU_ONLY_SIZES = ('base', 'large')
ARCH_KEYS = ('num_hidden_layers', 'hidden_size', 'num_attention_heads',
             'intermediate_size', 'vocab_size')

WORKLOADS = ('pretrain', 'classify', 'tag')
WORKLOAD_TITLES = {'pretrain': 'MLM+NSP pretraining',
                   'classify': 'sequence classification',
                   'tag': 'token tagging (dice)'}
NUM_LABELS = {'classify': 3, 'tag': 9}    # MNLI-like, CoNLL-NER-like
MASKED_LM_PROB = 0.15
MASK_ID, CLS_ID, SEP_ID = 103, 101, 102   # the bert-base-uncased ids

# The same optimizer and schedule in all three implementations: AdamW (eps 1e-6,
# decoupled weight decay 0.01 off LayerNorm and biases), global-norm clipping
# at 1.0, linear warmup then linear decay (bert_jax's defaults).
OPTIM = dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
             clip_global_norm=1.0, warmup_steps=100, total_steps=10_000)


def max_predictions(seq: int) -> int:
  """P, the masked-position slots per row: 20 at T=128 (BERT's recipe),
  scaled with T (40 at 256, 80 at 512)."""
  return max(1, math.ceil(seq * 20 / 128))


def num_masked(seq: int) -> int:
  """Masked tokens per row: 15% of T (19 at T=128), at most P, at least 1."""
  return max(1, min(max_predictions(seq), round(MASKED_LM_PROB * seq),
                    seq - 2))


def make_batch(workload: str, batch: int, seq: int, vocab_size: int,
               seed: int = 0) -> dict[str, np.ndarray]:
  """One synthetic batch with every key each implementation needs.

  Sequences are full length (attention_mask all 1, [CLS] ... [SEP] ...
  [SEP]): none of the three implementations skips padding, so padding would
  change no cost, only the tokens/s bookkeeping.

  Keys, bert_jax's: input_ids, token_type_ids / segment_ids, attention_mask /
  input_mask; pretrain: masked_lm_positions / _ids / _weights [B, P],
  next_sentence_label [B]; classify: labels [B], weights [B]; tag: labels,
  label_weights [B, T], weights [B]. HF's: `hf_labels` (pretrain: [B, T]
  original ids at masked positions, -100 elsewhere; tag: [B, T] with -100
  where bert_jax's label weight is 0; classify: [B]) and `hf_nsp` [B].
  """
  rng = np.random.default_rng(seed)
  b, t = batch, seq
  low = min(1000, vocab_size // 2)
  ids = rng.integers(low, vocab_size, (b, t)).astype(np.int32)
  ids[:, 0] = CLS_ID % vocab_size
  ids[:, t // 2] = SEP_ID % vocab_size
  ids[:, -1] = SEP_ID % vocab_size
  types = np.zeros((b, t), np.int32)
  types[:, t // 2 + 1:] = 1
  mask = np.ones((b, t), np.int32)
  out = dict(input_ids=ids, token_type_ids=types, attention_mask=mask,
             segment_ids=types, input_mask=mask)
  if workload == 'pretrain':
    p, m = max_predictions(t), num_masked(t)
    candidates = np.setdiff1d(np.arange(1, t - 1), [t // 2])
    positions = np.zeros((b, p), np.int32)
    lm_ids = np.zeros((b, p), np.int32)
    weights = np.zeros((b, p), np.float32)
    hf_labels = np.full((b, t), -100, np.int32)
    masked_ids = ids.copy()
    for i in range(b):
      pos = np.sort(rng.choice(candidates, m, replace=False))
      positions[i, :m] = pos
      lm_ids[i, :m] = ids[i, pos]
      weights[i, :m] = 1.0
      hf_labels[i, pos] = ids[i, pos]
      masked_ids[i, pos] = MASK_ID % vocab_size
    out.update(input_ids=masked_ids, masked_lm_positions=positions,
               masked_lm_ids=lm_ids, masked_lm_weights=weights,
               next_sentence_label=rng.integers(0, 2, b).astype(np.int32),
               hf_labels=hf_labels)
    out['hf_nsp'] = out['next_sentence_label']
  elif workload == 'classify':
    labels = rng.integers(0, NUM_LABELS['classify'], b).astype(np.int32)
    out.update(labels=labels, weights=np.ones(b, np.float32), hf_labels=labels)
  elif workload == 'tag':
    c = NUM_LABELS['tag']
    labels = rng.integers(0, c, (b, t)).astype(np.int32)
    # About 3 in 4 sub-tokens start a word; [CLS]/[SEP] never carry a label.
    lw = (rng.random((b, t)) < 0.75).astype(np.float32)
    lw[:, [0, t // 2, t - 1]] = 0.0
    out.update(labels=labels, label_weights=lw, weights=np.ones(b, np.float32),
               hf_labels=np.where(lw > 0, labels, -100).astype(np.int32))
  else:
    raise ValueError(f'unknown workload {workload!r}; known: {WORKLOADS}')
  return out


# ------------------------------------------------------------------ memory
def _proc_status(field: str) -> Optional[int]:
  """A `kB` field of /proc/self/status in bytes (None off Linux)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def rss_bytes() -> int:
  rss = _proc_status('VmRSS')
  if rss is None:
    import psutil  # pylint: disable=g-import-not-at-top
    rss = psutil.Process().memory_info().rss
  return rss


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS.

  Linux >= 4.0 (`echo 5 > /proc/self/clear_refs`). Lets one process measure
  the peak of one phase (the train steps) rather than of its whole life.
  """
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def peak_rss_bytes() -> int:
  """Peak RSS since the last `reset_peak_rss` (else since the start)."""
  hwm = _proc_status('VmHWM')
  if hwm is not None:
    return hwm
  # ru_maxrss: kB on Linux, bytes on macOS.
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if os.uname().sysname == 'Darwin' else peak * 1024


def num_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else what `platform` knows.

  Recorded with every table: the same environment is not always the same
  machine type, and ratios against PyTorch differ between CPU vendors."""
  import platform  # pylint: disable=g-import-not-at-top
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def host_info(*extra: str) -> str:
  """'<date>, <machine> (<CPU model>), <N> cores, <extra>..., load average
  before <x>': the line a benchmark section records about the run."""
  import datetime  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  return ', '.join([str(datetime.date.today()),
                    f'{platform.machine()} ({cpu_model()}), '
                    f'{num_cores()} cores', *extra,
                    f'load average before {os.getloadavg()[0]:.1f}'])


# ------------------------------------------------------------------ timing
def time_steps(step: Callable[[], Any], sync: Callable[[Any], None], *,
               repeats: int, warmup: int,
               before_timed: Optional[Callable[[], Any]] = None
               ) -> tuple[float, list[float]]:
  """(first call seconds, [steady-state seconds per step] * repeats).

  Each step is synchronised (`sync`) before its clock stops: JAX dispatch
  and CUDA kernels are asynchronous, so an unsynchronised clock would time
  the launch only. The first call holds tracing and compilation for the
  JAX implementations; `warmup` more calls are run untimed after it.
  `before_timed` runs once just before the timed steps (e.g. to reset a
  peak-memory mark, so that the compiler's own peak is not counted).
  """
  t0 = time.perf_counter()
  sync(step())
  first = time.perf_counter() - t0
  for _ in range(warmup):
    sync(step())
  if before_timed is not None:
    before_timed()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    sync(step())
    times.append(time.perf_counter() - t0)
  return first, times


def median(xs: Sequence[float]) -> float:
  return statistics.median(xs)


# ---------------------------------------------------------------- markdown
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  def cell(x):
    return x if isinstance(x, str) else f'{x}'
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(cell(x) for x in row) + ' |' for row in rows]
  return '\n'.join(lines)


def fmt_int(x: Optional[float]) -> str:
  return '—' if x is None else f'{x:,.0f}'


def fmt(x: Optional[float], digits: int = 2) -> str:
  return '—' if x is None else f'{x:.{digits}f}'


def sig(x: Optional[float], digits: int = 3) -> str:
  """`digits` significant digits: fits tiny and large FLOP counts alike."""
  return '—' if x is None else f'{x:.{digits}g}'


def mib(x: Optional[float]) -> str:
  return '—' if x is None else f'{x / 2**20:,.0f}'


def write_section(path: str, name: str, text: str) -> None:
  """Puts `text` between `<!-- name:start -->` / `<!-- name:end -->` in the
  Markdown file `path` (replacing that section, else appending it), so each
  benchmark script owns its own part of BENCHMARKS.md."""
  start, end = f'<!-- {name}:start -->', f'<!-- {name}:end -->'
  block = f'{start}\n{text.strip()}\n{end}\n'
  old = open(path).read() if os.path.exists(path) else ''
  if start in old and end in old:
    head, rest = old.split(start, 1)
    tail = rest.split(end, 1)[1].lstrip('\n')
    # One blank line before whatever follows, as when it was appended.
    new = head + block + ('\n' + tail if tail else '')
  else:
    new = old + ('\n' if old and not old.endswith('\n\n') else '') + block
  with open(path, 'w') as f:
    f.write(new)


def sections_after(path: str, name: str) -> str:
  """The `write_section` blocks of `path` other than `name`, to keep when a
  script regenerates the rest of the file."""
  if not os.path.exists(path):
    return ''
  text, kept = open(path).read(), []
  while '<!-- ' in text:
    _, _, text = text.partition('<!-- ')
    tag, _, text = text.partition(':start -->')
    if not _ or tag == name:
      continue
    body, _, text = text.partition(f'<!-- {tag}:end -->')
    kept.append(f'<!-- {tag}:start -->{body}<!-- {tag}:end -->\n')
  return '\n'.join(kept)
