"""Writes tests/data/optim_reference.npz: what bert_jax.optim computes today.

Run from the repository root::

  python tests/data/make_optim_reference.py

The fixture was written by this script at commit 8cd7bce (bert_jax/optim.py
before the issue #26 rewrite) on CPU (jax 0.10.2, optax 0.2.8), and
tests/test_optim.py::test_matches_reference_fixture asserts that the current
optimizer reproduces it bit for bit. The inputs are fixed: a tiny BERT-shaped
params tree (H=4, 2 layers, unscanned or scanned) and a gradient sequence,
both from a NumPy RNG. For each case in CASES it stores, in float32 and in
tree-flatten order of the params: every step's updates, the final params, the
final optimizer state's leaves (as float64, exact for float32/int32/bool) and
its tree structure, and the learning rate each update used. Only public
`optim` functions are called, so the test can run `run_case` with the new
module unchanged.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

V, H, I, L = 11, 4, 6, 2
TOTAL = 6  # optimizer updates the schedule spans
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    'optim_reference.npz')

# name -> (optimizer config, scanned layers, micro-steps run).
_BASE = dict(lr=0.05, warmup_steps=0, decay='constant', clip_global_norm=0.0)
CASES = {
    'adamw': (dict(name='adamw', lr=0.05, weight_decay=0.1, warmup_steps=1,
                   decay='linear', end_lr=0.01, clip_global_norm=1.0),
              False, 4),
    'lamb': (dict(name='lamb', lr=0.05, weight_decay=0.1, warmup_fraction=0.25,
                  decay='polynomial', power=2.0, clip_global_norm=0.0),
             False, 4),
    'lamb_no_exclude': (dict(_BASE, name='lamb', weight_decay=0.1,
                             lamb_exclude_from_layer_adaptation=False),
                        False, 4),
    'adam_l2': (dict(_BASE, name='adam', weight_decay=0.5, decay='cosine',
                     end_lr=0.001), False, 4),
    'no_bias_correction': (dict(_BASE, bias_correction=False), False, 4),
    'layerwise': (dict(_BASE, layerwise_lr_decay=0.7, weight_decay=0.1),
                  False, 4),
    'lr_multipliers': (dict(_BASE, layerwise_lr_decay=0.5, lr_multipliers=[
        ['^classifier/', 10.0], ['kernel$', 0.5], ['^classifier/', 3.0]]),
                       False, 4),
    'freeze': (dict(_BASE, freeze=['word_embeddings', '^bert/embeddings/'],
                    clip_global_norm=0.5), False, 4),
    'grad_accum': (dict(_BASE, grad_accum_steps=2, freeze='^nsp/',
                        clip_global_norm=0.5, decay='linear'), False, 8),
    'scanned_lamb': (dict(_BASE, name='lamb', weight_decay=0.1,
                          layerwise_lr_decay=0.7,
                          lr_multipliers={'^mlm/': 2.0}), True, 4),
    'scanned_adamw_accum_freeze': (
        dict(_BASE, grad_accum_steps=2, freeze='^bert/embeddings/',
             layerwise_lr_decay=0.9, weight_decay=0.1, clip_global_norm=1.0,
             warmup_steps=1, decay='linear'), True, 8),
}


def _layer(r):
  dense = lambda a, b: {'kernel': r(a, b), 'bias': r(b)}
  ln = lambda: {'scale': 1.0 + r(H), 'bias': r(H)}
  return {
      'attention': {n: dense(H, H)
                    for n in ('query', 'key', 'value', 'output')},
      'attention_LayerNorm': ln(),
      'intermediate': dense(H, I),
      'output': dense(I, H),
      'output_LayerNorm': ln(),
  }


def _scan(tree):
  """Same values, layers stacked under bert/encoder/layers (nn.scan)."""
  enc = tree['bert']['encoder']
  stacked = jax.tree.map(lambda *xs: np.stack(xs),
                         *[enc[f'layer_{i}'] for i in range(L)])
  return dict(tree, bert=dict(tree['bert'], encoder={'layers': stacked}))


def make_params(scanned=False):
  """The BERT-shaped params (float32 NumPy), with a zero classifier kernel
  (LAMB's ||w|| = 0 case)."""
  rng = np.random.default_rng(0)
  r = lambda *s: rng.normal(size=s).astype(np.float32)
  params = {
      'bert': {
          'embeddings': {
              'word_embeddings': {'embedding': r(V, H)},
              'position_embeddings': {'embedding': r(7, H)},
              'token_type_embeddings': {'embedding': r(2, H)},
              'LayerNorm': {'scale': 1.0 + r(H), 'bias': r(H)},
          },
          'encoder': {f'layer_{i}': _layer(r) for i in range(L)},
          'pooler': {'dense': {'kernel': r(H, H), 'bias': r(H)}},
      },
      'mlm': {
          'transform': {'dense': {'kernel': r(H, H), 'bias': r(H)},
                        'LayerNorm': {'scale': 1.0 + r(H), 'bias': r(H)}},
          'output_bias': r(V),
      },
      'nsp': {'dense': {'kernel': r(H, 2), 'bias': r(2)}},
      'classifier': {'dense': {'kernel': np.zeros((H, 3), np.float32),
                               'bias': r(3)}},
  }
  return _scan(params) if scanned else params


def make_grads(n, scanned=False):
  """n gradient trees like make_params(); the pooler bias's gradient is 0
  (LAMB's ||u|| = 0 case)."""
  rng = np.random.default_rng(1)
  shapes = make_params()
  out = []
  for _ in range(n):
    g = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                     shapes)
    g['bert']['pooler']['dense']['bias'] = np.zeros(H, np.float32)
    out.append(_scan(g) if scanned else g)
  return out


def _concat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x)) for x in
                         jax.tree.leaves(tree)])


def run_case(optim, name) -> dict:
  """Runs case `name` with module `optim`; returns the arrays to compare."""
  cfg, scanned, steps = CASES[name]
  params = jax.tree.map(jnp.asarray, make_params(scanned))
  tx, schedule = optim.make_optimizer(cfg, params, TOTAL)
  state = tx.init(params)
  update = jax.jit(tx.update)
  updates_seq, lrs = [], []
  for g in make_grads(steps, scanned):
    lrs.append(np.float32(schedule(optim.update_count(state))))
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    updates_seq.append(_concat(updates).astype(np.float32))
    params = optax.apply_updates(params, updates)
  state_leaves = [np.ravel(np.asarray(x)).astype(np.float64)
                  for x in jax.tree.leaves(state)]
  return {
      'updates': np.stack(updates_seq),
      'params': _concat(params).astype(np.float32),
      'state': np.concatenate(state_leaves),
      'state_sizes': np.array([x.size for x in state_leaves], np.int64),
      'state_treedef': np.array(str(jax.tree.structure(state))),
      'lr': np.array(lrs, np.float32),
  }


def main():
  sys.path.insert(0, os.path.join(os.path.dirname(PATH), '..', '..'))
  from bert_jax import optim  # pylint: disable=g-import-not-at-top
  arrays = {
      'params0': _concat(make_params()),
      'grads': np.stack([_concat(g) for g in make_grads(8)]),
      'cases': np.array(json.dumps(
          {k: [c, s, n] for k, (c, s, n) in CASES.items()}, sort_keys=True)),
  }
  for name in CASES:
    for key, value in run_case(optim, name).items():
      arrays[f'{name}/{key}'] = value
  np.savez_compressed(PATH, **arrays)
  print(f'wrote {PATH} ({os.path.getsize(PATH)} bytes, {len(CASES)} cases)')


if __name__ == '__main__':
  main()
