r"""Times every loss's forward+backward under `jit`, as a ratio to plain CE.

  python -m experiments.bench_losses [--repeats 200] [--inner 8] [--cost]
                                     [--only REGEX] [--shapes 1024x9,256x100]

Each timed call runs `inner` forward+backward passes inside one jitted
`fori_loop` (logits shifted by the loop index so XLA cannot hoist the work
out of the loop, and every gradient entry feeding the carry so none of it
is dead code), so per-call dispatch does not mask the compute on small
shapes. Calls for all losses are interleaved round by round, in a shuffled
order, so machine load hits them alike. The table shows the median time per
pass relative to a plain baseline measured in the same run: optax
integer-label softmax CE for softmax losses, optax sigmoid BCE for the
sigmoid/multi-label ones (on the same [..., C] logits; their ratio to
softmax CE is shown too), both with the same weighted-mean reduction.
Prints a Markdown table.

`--cost` adds a second table from XLA's static cost analysis of one
compiled forward+backward on the tagging shape (flops, transcendentals and
bytes accessed relative to the same baseline): deterministic, so useful
where wall-clock timings are noisy (a loaded, shared CPU).

`--shapes` replaces the three default logits shapes by your own (the class
axis last), e.g. your tagger's `[batch, length, labels]`.

The losses are written for readability, not tuned per shape (there are no
per-shape speed targets); a loss's forward and backward is well under 1% of
a fine-tuning step, so this table is for spotting a pathological loss, not
for ranking them.
"""

import argparse
import platform
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import losses

SHAPES = {'tagging [64,128,9]': (64, 128, 9),
          'cls [256,3]': (256, 3),
          'cls [256,20]': (256, 20)}
COST_SHAPE = SHAPES['tagging [64,128,9]']

# (row label, config, label kind). Sigmoid losses get multi-hot labels of
# the logits' shape.
CASES = [
    ('ce', dict(name='ce'), 'int'),
    ('ce, label_smoothing=0.1', dict(name='ce', label_smoothing=0.1), 'int'),
    ('bce', dict(name='bce'), 'multi_hot'),
    ('weighted_ce (inverse_freq)',
     dict(name='weighted_ce', alpha='inverse_freq'), 'int'),
    ('class_balanced_ce', dict(name='class_balanced_ce'), 'int'),
    ('focal, gamma=2', dict(name='focal', gamma=2.0), 'int'),
    ('focal, gamma=0.5, alpha', dict(name='focal', gamma=0.5,
                                     alpha='inverse_sqrt_freq'), 'int'),
    ('sigmoid_focal', dict(name='sigmoid_focal'), 'multi_hot'),
    ('ghm', dict(name='ghm'), 'int'),
    ('sigmoid_ghm', dict(name='sigmoid_ghm'), 'multi_hot'),
    ('dsc (one-vs-rest)', dict(name='dsc'), 'int'),
    ('dice (one-vs-rest)', dict(name='dice'), 'int'),
    ('tversky (one-vs-rest)', dict(name='tversky'), 'int'),
    ('logit_adjusted_ce', dict(name='logit_adjusted_ce'), 'int'),
    ('multilabel_ce', dict(name='multilabel_ce'), 'multi_hot'),
    ('focal + flood=0.05', dict(name='focal', flood=0.05), 'int'),
]


CE = 'plain CE (optax)'
BCE = 'plain BCE (optax)'


def plain_ce(logits, labels, *, weights, state):
  per = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  return jnp.sum(weights * per) / jnp.maximum(jnp.sum(weights), 1e-30), state


def plain_bce(logits, labels, *, weights, state):
  per = optax.sigmoid_binary_cross_entropy(
      logits.astype(jnp.float32), labels.astype(jnp.float32))
  w = jnp.broadcast_to(weights[..., None], per.shape)
  return jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1e-30), state


def make_step(loss_fn, inner):
  """Jitted: `inner` value_and_grad passes, state threaded through."""

  def one(logits, labels, weights, state):
    def f(x):
      return loss_fn(x, labels, weights=weights, state=state)
    (value, new_state), grad = jax.value_and_grad(f, has_aux=True)(logits)
    return value, grad, new_state

  @jax.jit
  def step(logits, labels, weights, state, probe):
    def body(i, carry):
      acc, state = carry
      shifted = logits + i.astype(logits.dtype) * 1e-3
      value, grad, state = one(shifted, labels, weights, state)
      return acc + value + jnp.sum(grad * probe), state
    return jax.lax.fori_loop(0, inner, body,
                             (jnp.zeros((), jnp.float32), state))

  return step


def make_inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  num_classes = shape[-1]
  logits = jnp.asarray(rng.normal(size=shape) * 3, jnp.float32)
  # Imbalanced labels: class c with probability ∝ 2^-c.
  prior = 0.5 ** np.arange(num_classes)
  prior /= prior.sum()
  labels = jnp.asarray(rng.choice(num_classes, size=shape[:-1], p=prior),
                       jnp.int32)
  multi_hot = jnp.asarray(rng.random(shape) < 0.15, jnp.int32)
  weights = jnp.asarray(rng.random(shape[:-1]) < 0.9, jnp.float32)
  counts = np.maximum(1, np.round(prior * 10000)).astype(int)
  return logits, {'int': labels, 'multi_hot': multi_hot}, weights, counts


def bench_shape(shape, repeats, inner, cases=CASES):
  logits, labels, weights, counts = make_inputs(shape)
  probe = jnp.full(shape, 1e-3, jnp.float32)
  runs = [(CE, make_step(plain_ce, inner), labels['int'], {}),
          (BCE, make_step(plain_bce, inner), labels['multi_hot'], {})]
  for label, cfg, kind in cases:
    spec = losses.from_config(cfg, num_classes=shape[-1], class_counts=counts)
    runs.append((label, make_step(spec, inner), labels[kind],
                 spec.init_state()))
  for _, step, lab, state in runs:  # Compile and warm up.
    for _ in range(3):
      jax.block_until_ready(step(logits, lab, weights, state, probe))
  times = {name: [] for name, *_ in runs}
  order = np.random.default_rng(0)
  for _ in range(repeats):
    # A fresh order each round, so no loss always runs after a heavy one.
    for i in order.permutation(len(runs)):
      name, step, lab, state = runs[i]
      t0 = time.perf_counter()
      jax.block_until_ready(step(logits, lab, weights, state, probe))
      times[name].append((time.perf_counter() - t0) / inner)
  return {name: float(np.median(t)) for name, t in times.items()}


def cost_table(shape, cases=CASES):
  """Static XLA cost of one forward+backward, relative to the baseline."""
  logits, labels, weights, counts = make_inputs(shape)

  def cost(fn, lab, state):
    grad_fn = jax.jit(jax.value_and_grad(
        lambda x: fn(x, lab, weights=weights, state=state)[0]))
    c = grad_fn.lower(logits).compile().cost_analysis()
    c = c[0] if isinstance(c, list) else c
    return np.array([c.get(k, 0.0) for k in
                     ('flops', 'transcendentals', 'bytes accessed')])

  base = {CE: cost(plain_ce, labels['int'], {}),
          BCE: cost(plain_bce, labels['multi_hot'], {})}
  print(f'\nXLA cost analysis, one fwd+bwd on {list(shape)}, relative to '
        'the baseline (flops / transcendentals / bytes accessed):\n')
  print('| loss | baseline | flops | transcendentals | bytes |')
  print('|---|---|---:|---:|---:|')
  for label, cfg, kind in cases:
    spec = losses.from_config(cfg, num_classes=shape[-1], class_counts=counts)
    b = CE if kind == 'int' else BCE
    r = cost(spec, labels[kind], spec.init_state()) / np.maximum(base[b], 1)
    print(f'| {label} | {"CE" if b == CE else "BCE"} | {r[0]:.2f}x | '
          f'{r[1]:.2f}x | {r[2]:.2f}x |')


def parse_shapes(text):
  """`'64x128x9,256x3'` -> `{'[64,128,9]': (64, 128, 9), ...}`."""
  shapes = {}
  for item in text.split(','):
    try:
      shape = tuple(int(d) for d in item.strip().split('x'))
    except ValueError:
      shape = ()
    if len(shape) < 2 or min(shape) < 1 or shape[-1] < 2:
      raise ValueError(
          f'--shapes: {item.strip()!r} is not a logits shape like 64x128x9 '
          '(positive sizes, at least two axes, at least 2 classes last)')
    shapes['[' + ','.join(map(str, shape)) + ']'] = shape
  return shapes


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=200)
  parser.add_argument('--inner', type=int, default=8)
  parser.add_argument('--cost', action='store_true',
                      help='also print XLA static cost ratios')
  parser.add_argument('--only', default='',
                      help='time only the rows whose label matches this '
                      'regular expression (the baselines always run)')
  parser.add_argument('--shapes', default='',
                      help='comma-separated logits shapes, class axis last, '
                      'e.g. 1024x9,256x100 (default: the three in SHAPES); '
                      'the cost table then uses the first')
  args = parser.parse_args()
  shapes, cost_shape = SHAPES, COST_SHAPE
  if args.shapes:
    try:
      shapes = parse_shapes(args.shapes)
    except ValueError as e:
      parser.error(str(e))
    cost_shape = next(iter(shapes.values()))
  cases = [c for c in CASES if re.search(args.only, c[0])]
  if not cases:
    parser.error(f'--only {args.only!r} matches no row; rows: '
                 f'{[c[0] for c in CASES]}')
  results = {title: bench_shape(shape, args.repeats, args.inner, cases)
             for title, shape in shapes.items()}
  print(f'Device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'jax {jax.__version__}, {platform.machine()}; median of '
        f'{args.repeats} calls x {args.inner} fwd+bwd passes under jit.\n')
  print('| loss | baseline | ' + ' | '.join(shapes) + ' |')
  print('|---|---|' + '---:|' * len(shapes))
  for base in (CE, BCE):
    print(f'| {base}, µs/pass | | ' + ' | '.join(
        f'{results[t][base] * 1e6:.1f}' for t in shapes) + ' |')
  for label, _, kind in cases:
    base = CE if kind == 'int' else BCE
    cells = []
    for t in shapes:
      cell = f'{results[t][label] / results[t][base]:.2f}x'
      if base == BCE:
        cell += f' ({results[t][label] / results[t][CE]:.2f}x CE)'
      cells.append(cell)
    print(f'| {label} | {"CE" if base == CE else "BCE"} | ' +
          ' | '.join(cells) + ' |')
  if args.cost:
    cost_table(cost_shape, cases)


if __name__ == '__main__':
  main()
