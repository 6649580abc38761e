r"""Train-step speed of bert_jax against HF Flax and HF PyTorch BERT, side by side.

  python -m experiments.benchmark [--sizes=small,minilm] [--repeats=N]
      [--warmup=N] [--out=BENCHMARKS.md] [--no-scaling] [--quick]

What is timed: one training step (forward + backward + AdamW update) on the
same config, weights, batch and sequence length, for
  bert_jax  `jax.jit(train.train_step, donate_argnums=0)`, exactly as the
            trainer builds it, with the real `train_loss` of each task
            (PretrainingTask, ClassificationTask, TaggingTask) and the
            optimizer from `optim.make_optimizer`;
  HF Flax   `transformers.FlaxBertFor*` under `jax.jit` (state donated),
            optax clip + AdamW, the way HF's Flax examples train: the MLM loss
            is a cross-entropy over all T positions with labels -100 off
            the masked ones, because FlaxBertForPreTraining computes the
            vocabulary logits at every position;
  HF torch  `transformers.BertFor*` in eager mode (its default SDPA
            attention), `torch.optim.AdamW` + `clip_grad_norm_`,
            `torch.set_num_threads(<cores>)`, fp32.
Workloads: `pretrain` (MLM + NSP, 15% of tokens masked, P = 20 slots at
T = 128), `classify` (sequence classification, 3 labels, CE) and `tag`
(token tagging, 9 labels, the one-vs-rest dice loss: `losses` 'dice' in
bert_jax, the same formula in jnp / torch for the peers). Hyperparameters
(bench_utils.OPTIM) are equal everywhere: lr 1e-4 with linear warmup/decay,
betas (0.9, 0.999), eps 1e-6, weight decay 0.01 off LayerNorm and biases,
clipping at global norm 1.0; dropout 0.1 on in all three.

Equal work is checked before anything is timed: the bert_jax process creates
the weights and exports them with `hf_weights.export_hf` (the fine-tuning
heads go through an .npz); the HF processes load that directory
(`from_pretrained`, `from_pt=True` for Flax) and must reproduce bert_jax's
loss and gradient global norm on the same batch with dropout off, within a
tolerance, or the run stops. For pretraining the two losses are the same
number although the peers compute the MLM logits at all T positions and
bert_jax only at the P gathered ones: the -100 labels remove the other
positions from the loss, not from the cost.

Each (size, workload, implementation) runs in its own fresh Python process,
which imports only its own framework: no thread pool of one framework spins
beside another's, and memory is measured per implementation. Reported per
row: tokens/s = B*T / median step time over `--repeats` synchronised steps
after `--warmup` untimed ones (`block_until_ready` for JAX; CUDA sync for
torch on GPU); compile time = first call - median step (JAX only); peak
memory = on CPU the host peak RSS of the timed (steady-state) train steps
minus the process's RSS before any model was built (params, optimizer state,
activations, compiled code; labelled "host RSS"; the compiler's own transient
peak during the first call is left out), on GPU the device allocator's peak.

A second table shows how bert_jax's step cost grows with sequence length,
batch and rematerialisation (`remat_policy` 'none' vs 'full') at one size.

Timings are only as good as the machine is quiet: the 1-minute load average
is written before the run, at the start of every row and after the run. On
CPU, `base`/`large` are left out unless asked for (`--sizes`); they are in the
default set when a GPU is present.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

try:
  from experiments import bench_utils as bu
except ImportError:  # run as a script: experiments/benchmark.py
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from experiments import bench_utils as bu  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMPLS = ('bert_jax', 'hf_flax', 'hf_torch')
IMPL_TITLES = {'bert_jax': 'bert_jax', 'hf_flax': 'HF Flax', 'hf_torch': 'HF PyTorch'}
# Targets of the issue, as (workload, peer) -> minimum tokens/s ratio.
TARGETS = {('pretrain', 'hf_flax'): 2.0, ('classify', 'hf_flax'): 1.0,
           ('tag', 'hf_flax'): 1.0, ('pretrain', 'hf_torch'): 1.5,
           ('classify', 'hf_torch'): 1.5, ('tag', 'hf_torch'): 1.5}
# Guard tolerances (relative) on the loss and the gradient norm. fp32 on CPU
# agrees to ~1e-6; on GPU both JAX (default precision) and torch (allowed
# below) use TF32 matmuls, which agree to ~1e-3.
GUARD_RTOL = {'cpu': (1e-4, 1e-3), 'gpu': (5e-3, 2e-2)}
SCALING_GRID = [(t, b, r) for r in ('none', 'full') for t in (128, 256)
                for b in (8, 16)]
QUICK_SCALING_GRID = [(16, 2, 'none'), (16, 2, 'full')]


# =================================================================== workers
# Each worker runs in its own process: `--worker=<spec.json>`. It writes its
# result as JSON to spec['out'].


def _bert_jax_task(workload: str, config):
  """The real task class's train_loss, without its dataset-loading __init__.

  The trainer differentiates `task.train_loss`; building the task objects
  around their model and loss (instead of copying their loss code) keeps the
  benchmark on the code path the trainer actually runs.
  """
  import losses  # pylint: disable=g-import-not-at-top
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import classification, pretraining, tagging  # pylint: disable=g-import-not-at-top
  if workload == 'pretrain':
    task = object.__new__(pretraining.PretrainingTask)
    task.bert_config = config
    task.model = heads.BertForPreTraining(config)
  elif workload == 'classify':
    task = object.__new__(classification.ClassificationTask)
    task.model = heads.BertForSequenceClassification(
        config, num_labels=bu.NUM_LABELS['classify'])
    task.loss = losses.from_config(dict(name='ce'),
                                   num_classes=bu.NUM_LABELS['classify'])
  else:
    task = object.__new__(tagging.TaggingTask)
    task.model = heads.BertForTokenClassification(
        config, num_labels=bu.NUM_LABELS['tag'])
    task.loss = losses.from_config(dict(name='dice'),
                                   num_classes=bu.NUM_LABELS['tag'])
  task.config = None
  return task


BERT_JAX_KEYS = {
    'pretrain': ('input_ids', 'segment_ids', 'input_mask', 'masked_lm_positions',
                 'masked_lm_ids', 'masked_lm_weights', 'next_sentence_label'),
    'classify': ('input_ids', 'token_type_ids', 'attention_mask', 'labels',
                 'weights'),
    'tag': ('input_ids', 'token_type_ids', 'attention_mask', 'labels',
            'label_weights', 'weights'),
}
HF_KEYS = {
    'pretrain': ('input_ids', 'token_type_ids', 'attention_mask', 'hf_labels',
                 'hf_nsp'),
    'classify': ('input_ids', 'token_type_ids', 'attention_mask', 'hf_labels'),
    'tag': ('input_ids', 'token_type_ids', 'attention_mask', 'hf_labels'),
}
HEAD_NAMES = {'classify': 'classifier', 'tag': 'tagger'}


def _bert_config(spec):
  """BertConfig of a row. Optional spec keys (the GPU check's rows):
  `dtype` (compute dtype, default fp32), `attention` (the model's
  `attention_implementation`), `attention_dropout` (default 0.1; the
  fused kernels run only where it is 0) and `scan_layers` (default off)."""
  from bert_jax.model import BertConfig  # pylint: disable=g-import-not-at-top
  return BertConfig(**{k: spec['arch'][k] for k in bu.ARCH_KEYS},
                    max_position_embeddings=512,
                    remat_policy=spec.get('remat', 'none'),
                    dtype=spec.get('dtype', 'float32'),
                    attention_implementation=spec.get('attention'),
                    attention_probs_dropout_prob=spec.get('attention_dropout',
                                                          0.1),
                    scan_layers=spec.get('scan_layers', False))


def _ensure_export(weights_dir: pathlib.Path, config, seed: int) -> None:
  """Fresh BertForPreTraining weights in HF format, shared by all peers."""
  if (weights_dir / 'model.safetensors').exists():
    return
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bert_jax import hf_weights  # pylint: disable=g-import-not-at-top
  from bert_jax.heads import BertForPreTraining  # pylint: disable=g-import-not-at-top
  ids = np.zeros((1, 2), np.int32)
  params = jax.jit(lambda k: BertForPreTraining(config).init(
      k, ids, ids, ids, ids[:, :1]))(jax.random.PRNGKey(seed))['params']
  hf_weights.export_hf(weights_dir, config, jax.device_get(params))


def _bert_jax_params(spec, config, task, batch):
  """Params from the exported directory, the way `init_from` loads them;
  a fine-tuning head is initialised fresh and written for the peers."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bert_jax import hf_weights  # pylint: disable=g-import-not-at-top
  weights_dir = pathlib.Path(spec['weights_dir'])
  _ensure_export(weights_dir, config, spec['seed'])
  _, loaded, _ = hf_weights.from_pretrained(weights_dir, load_tokenizer=False,
                                            scan_layers=config.scan_layers)
  workload = spec['workload']
  if workload == 'pretrain':
    return loaded
  fresh = jax.device_get(jax.jit(task.init_params)(
      jax.random.PRNGKey(spec['seed']), batch))
  head = fresh[HEAD_NAMES[workload]]
  np.savez(weights_dir / f'head_{workload}.npz', kernel=np.asarray(head['kernel']),
           bias=np.asarray(head['bias']))
  return {'bert': loaded['bert'], HEAD_NAMES[workload]: head}


def _jax_device_info():
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  return d.platform, d.device_kind


def _jax_memory(platform_name: str, rss0: int) -> tuple[Optional[int], str]:
  if platform_name == 'cpu':
    return bu.peak_rss_bytes() - rss0, 'host RSS'
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return peak, 'device peak'


def _hlo_gflops(jitted, *args) -> Optional[float]:
  """FLOPs of one call from XLA's cost analysis of the lowered HLO, in
  GFLOP: the arithmetic the step asks for (rematerialised recomputation
  included), independent of how busy the machine is. Lowering does not
  compile or run anything."""
  try:
    cost = jitted.lower(*args).cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None   # an estimate only: never worth failing the run over
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get('flops')
  return None if flops is None else flops / 1e9


def _worker_bert_jax(spec) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from bert_jax import optim, train  # pylint: disable=g-import-not-at-top
  workload = spec['workload']
  host = bu.make_batch(workload, spec['batch'], spec['seq'],
                       spec['arch']['vocab_size'], spec['seed'])
  batch = {k: jnp.asarray(host[k]) for k in BERT_JAX_KEYS[workload]}
  platform_name, kind = _jax_device_info()
  rss0 = bu.rss_bytes()
  config = _bert_config(spec)
  task = _bert_jax_task(workload, config)
  params = jax.device_put(_bert_jax_params(spec, config, task, batch))
  result = dict(device=kind, platform=platform_name,
                peak_flops=train.peak_flops_per_device())
  if workload == 'pretrain':
    # The model-FLOP count behind MFU (pretraining.training_flops_per_example),
    # so the parent need not import JAX.
    from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
    result['model_flops_per_example'] = pretraining.training_flops_per_example(
        config, spec['seq'], bu.max_predictions(spec['seq']))

  if spec.get('guard', True):
    # Dropout off: the only way three frameworks' losses can be compared.
    g_task = _bert_jax_task(workload, config.replace(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))

    def guard(p, b):
      (loss, _), grads = jax.value_and_grad(g_task.train_loss, has_aux=True)(
          p, b, jax.random.PRNGKey(0), g_task.init_loss_state())
      return loss, optax.global_norm(grads)
    loss, gnorm = jax.jit(guard)(params, batch)
    result['guard'] = dict(loss=float(loss), grad_norm=float(gnorm))
    del g_task, guard

  c = bu.OPTIM
  tx, schedule = optim.make_optimizer(
      dict(name='adamw', lr=c['lr'], b1=c['b1'], b2=c['b2'], eps=c['eps'],
           weight_decay=c['weight_decay'],
           clip_global_norm=c['clip_global_norm'],
           warmup_steps=c['warmup_steps'], decay='linear'),
      params, c['total_steps'])
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      loss_state=task.init_loss_state(), rng=jax.random.PRNGKey(1),
      nonfinite_step=-jnp.ones((), jnp.int32),
      nonfinite_what=jnp.zeros((), jnp.int32))
  del params
  # As train.run builds it (one device: no shardings to give).
  step_fn = jax.jit(
      functools.partial(train.train_step, task=task, tx=tx, schedule=schedule,
                        grad_accum_steps=1, skip_nonfinite=False),
      donate_argnums=0)
  holder = {'state': state}
  del state

  def step():
    holder['state'], holder['metrics'] = step_fn(holder['state'], batch)
    return holder['state'], holder['metrics']

  gc.collect()
  first, times = bu.time_steps(step, jax.block_until_ready,
                               repeats=spec['repeats'], warmup=spec['warmup'],
                               before_timed=bu.reset_peak_rss)
  mem, mem_kind = _jax_memory(platform_name, rss0)
  # The last timed step's loss: a step that went non-finite is not a result.
  loss_sum, loss_count = (float(x) for x in holder['metrics']['loss'])
  if loss_count != 1.0 or not math.isfinite(loss_sum):
    raise FloatingPointError(f'bert_jax: non-finite loss {loss_sum}')
  result['hlo_gflops'] = _hlo_gflops(step_fn, holder['state'], batch)
  result.update(first_s=first, times=times, mem_bytes=mem, mem_kind=mem_kind,
                final_loss=loss_sum)
  return result


def _dice_jnp(logits, labels, weights, gamma=1.0):
  """One-vs-rest set-level dice loss (Li et al. 2020), as losses.dice.dice."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  y = jax.nn.one_hot(labels, logits.shape[-1], dtype=p.dtype)
  w = weights[..., None].astype(p.dtype)
  inter = jnp.sum(w * p * y, axis=(0, 1))
  den = jnp.sum(w * (p * p + y * y), axis=(0, 1))
  per_class = 1.0 - (2.0 * inter + gamma) / jnp.maximum(
      den + gamma, jnp.finfo(p.dtype).eps)
  return jnp.where(jnp.sum(w) > 0, jnp.mean(per_class), 0.0)


def _hf_decay(path: tuple[str, ...]) -> bool:
  """Weight decay on everything but LayerNorm params and biases (as bert_jax's
  DEFAULT_WD_EXCLUDE and HF's examples)."""
  return path[-1] != 'bias' and not any('layernorm' in p.lower() for p in path)


def _worker_hf_flax(spec) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from flax.training import train_state  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  workload = spec['workload']
  host = bu.make_batch(workload, spec['batch'], spec['seq'],
                       spec['arch']['vocab_size'], spec['seed'])
  batch = {k: jnp.asarray(host[k]) for k in HF_KEYS[workload]}
  platform_name, kind = _jax_device_info()
  rss0 = bu.rss_bytes()
  weights_dir = pathlib.Path(spec['weights_dir'])
  cls = {'pretrain': transformers.FlaxBertForPreTraining,
         'classify': transformers.FlaxBertForSequenceClassification,
         'tag': transformers.FlaxBertForTokenClassification}[workload]
  kw = {} if workload == 'pretrain' else {'num_labels': bu.NUM_LABELS[workload]}
  model = cls.from_pretrained(str(weights_dir), from_pt=True, **kw)
  params = jax.tree_util.tree_map(jnp.asarray, dict(model.params))
  if workload != 'pretrain':
    head = np.load(weights_dir / f'head_{workload}.npz')
    params['classifier'] = {'kernel': jnp.asarray(head['kernel']),
                            'bias': jnp.asarray(head['bias'])}

  def loss_fn(p, b, rng, train):
    out = model(b['input_ids'], b['attention_mask'], b['token_type_ids'],
                params=p, dropout_rng=rng, train=train)
    if workload == 'pretrain':
      labels = b['hf_labels']
      m = (labels != -100).astype(jnp.float32)
      # Logits at all T positions: FlaxBertForPreTraining has no other way.
      nll = optax.softmax_cross_entropy_with_integer_labels(
          out.prediction_logits, jnp.where(labels != -100, labels, 0))
      mlm = jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)
      nsp = optax.softmax_cross_entropy_with_integer_labels(
          out.seq_relationship_logits, b['hf_nsp']).mean()
      return mlm + nsp
    if workload == 'classify':
      return optax.softmax_cross_entropy_with_integer_labels(
          out.logits, b['hf_labels']).mean()
    labels = b['hf_labels']
    return _dice_jnp(out.logits, jnp.maximum(labels, 0),
                     (labels != -100).astype(jnp.float32))

  result = dict(device=kind, platform=platform_name)
  if spec.get('guard', True):
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p, b: loss_fn(p, b, None, False)))(params, batch)
    result['guard'] = dict(loss=float(loss),
                           grad_norm=float(optax.global_norm(grads)))
    del grads

  c = bu.OPTIM
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, c['lr'], c['warmup_steps']),
       optax.linear_schedule(c['lr'], 0.0,
                             c['total_steps'] - c['warmup_steps'])],
      [c['warmup_steps']])
  decay_mask = lambda tree: traverse_util.unflatten_dict(
      {k: _hf_decay(k) for k in traverse_util.flatten_dict(tree)})
  tx = optax.chain(
      optax.clip_by_global_norm(c['clip_global_norm']),
      optax.adamw(schedule, b1=c['b1'], b2=c['b2'], eps=c['eps'],
                  weight_decay=c['weight_decay'], mask=decay_mask))
  state = train_state.TrainState.create(apply_fn=model.__call__, params=params,
                                        tx=tx)
  del params

  def train_step(state, b, rng):
    rng, dropout_rng = jax.random.split(rng)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, b, dropout_rng,
                                              True)
    return state.apply_gradients(grads=grads), loss, rng

  step_fn = jax.jit(train_step, donate_argnums=0)
  holder = {'state': state, 'rng': jax.random.PRNGKey(1)}
  del state

  def step():
    holder['state'], holder['loss'], holder['rng'] = step_fn(
        holder['state'], batch, holder['rng'])
    return holder['state'], holder['loss']

  gc.collect()
  first, times = bu.time_steps(step, jax.block_until_ready,
                               repeats=spec['repeats'], warmup=spec['warmup'],
                               before_timed=bu.reset_peak_rss)
  mem, mem_kind = _jax_memory(platform_name, rss0)
  loss = holder['loss']
  if not math.isfinite(float(loss)):
    raise FloatingPointError(f'HF Flax: non-finite loss {float(loss)}')
  result['hlo_gflops'] = _hlo_gflops(step_fn, holder['state'], batch,
                                     holder['rng'])
  result.update(first_s=first, times=times, mem_bytes=mem, mem_kind=mem_kind,
                final_loss=float(loss))
  return result


def _dice_torch(logits, labels, weights, gamma=1.0):
  """The same one-vs-rest set-level dice as `_dice_jnp`, in torch."""
  import torch  # pylint: disable=g-import-not-at-top
  p = torch.softmax(logits.float(), dim=-1)
  y = torch.nn.functional.one_hot(labels, logits.shape[-1]).to(p.dtype)
  w = weights[..., None].to(p.dtype)
  inter = (w * p * y).sum(dim=(0, 1))
  den = (w * (p * p + y * y)).sum(dim=(0, 1))
  eps = torch.finfo(p.dtype).eps
  per_class = 1.0 - (2.0 * inter + gamma) / torch.clamp(den + gamma, min=eps)
  return torch.where(w.sum() > 0, per_class.mean(), torch.zeros_like(inter[0]))


def _worker_hf_torch(spec) -> dict[str, Any]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  threads = spec.get('torch_threads') or bu.num_cores()
  torch.set_num_threads(threads)
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  if cuda:
    # JAX's default fp32 matmul precision on GPU is TF32: allow it here too,
    # so that both do the same arithmetic.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  workload = spec['workload']
  host = bu.make_batch(workload, spec['batch'], spec['seq'],
                       spec['arch']['vocab_size'], spec['seed'])
  batch = {k: torch.from_numpy(host[k].astype(np.int64)).to(device)
           for k in HF_KEYS[workload]}
  rss0 = bu.rss_bytes()
  weights_dir = pathlib.Path(spec['weights_dir'])
  cls = {'pretrain': transformers.BertForPreTraining,
         'classify': transformers.BertForSequenceClassification,
         'tag': transformers.BertForTokenClassification}[workload]
  kw = {} if workload == 'pretrain' else {'num_labels': bu.NUM_LABELS[workload]}
  # SDPA named explicitly (the default since transformers 4.36, and in 5.x);
  # `attn_implementation` is the keyword in both 4.57 and 5.x.
  model = cls.from_pretrained(str(weights_dir), attn_implementation='sdpa',
                              **kw).to(device)
  if workload != 'pretrain':
    head = np.load(weights_dir / f'head_{workload}.npz')
    with torch.no_grad():
      model.classifier.weight.copy_(torch.from_numpy(head['kernel'].T.copy()))
      model.classifier.bias.copy_(torch.from_numpy(head['bias']))
  # spec dtype 'bfloat16': fp32 weights, forward under bf16 autocast (the
  # mixed precision of NVIDIA's and HF's PyTorch BERT recipes).
  bf16 = spec.get('dtype', 'float32') == 'bfloat16'

  def loss_fn():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      return _loss()

  def _loss():
    inputs = dict(input_ids=batch['input_ids'],
                  attention_mask=batch['attention_mask'],
                  token_type_ids=batch['token_type_ids'])
    if workload == 'pretrain':
      # HF's own loss: CE over all T positions, ignore_index -100.
      return model(**inputs, labels=batch['hf_labels'],
                   next_sentence_label=batch['hf_nsp']).loss
    if workload == 'classify':
      return model(**inputs, labels=batch['hf_labels']).loss
    labels = batch['hf_labels']
    return _dice_torch(model(**inputs).logits, labels.clamp(min=0),
                       (labels != -100).float())

  result = dict(device=(torch.cuda.get_device_name() if cuda
                        else platform.processor() or 'cpu'),
                platform='gpu' if cuda else 'cpu', torch_threads=threads)
  if spec.get('guard', True):
    model.eval()
    loss = loss_fn()
    loss.backward()
    gnorm = torch.sqrt(sum((p.grad.double() ** 2).sum()
                           for p in model.parameters() if p.grad is not None))
    result['guard'] = dict(loss=float(loss), grad_norm=float(gnorm))
    model.zero_grad(set_to_none=True)
    del loss
  model.train()

  c = bu.OPTIM
  named = list(model.named_parameters())
  decay = lambda name: _hf_decay(tuple(name.split('.')))
  groups = [
      {'params': [p for n, p in named if decay(n)],
       'weight_decay': c['weight_decay']},
      {'params': [p for n, p in named if not decay(n)], 'weight_decay': 0.0}]
  opt = torch.optim.AdamW(groups, lr=c['lr'], betas=(c['b1'], c['b2']),
                          eps=c['eps'])
  warm, total = c['warmup_steps'], c['total_steps']
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / (total - warm)))

  holder = {}

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), c['clip_global_norm'])
    opt.step()
    sched.step()
    holder['loss'] = loss
    return loss

  def sync(_):
    if cuda:
      torch.cuda.synchronize()

  def reset_peaks():
    if cuda:
      torch.cuda.reset_peak_memory_stats()
    bu.reset_peak_rss()

  gc.collect()
  first, times = bu.time_steps(step, sync, repeats=spec['repeats'],
                               warmup=spec['warmup'], before_timed=reset_peaks)
  if cuda:
    mem, mem_kind = torch.cuda.max_memory_allocated(), 'device peak'
  else:
    mem, mem_kind = bu.peak_rss_bytes() - rss0, 'host RSS'
  loss = float(holder['loss'])
  if not math.isfinite(loss):
    raise FloatingPointError(f'HF torch: non-finite loss {loss}')
  result.update(first_s=first, times=times, mem_bytes=mem, mem_kind=mem_kind,
                final_loss=loss)
  return result


WORKERS = {'bert_jax': _worker_bert_jax, 'hf_flax': _worker_hf_flax,
           'hf_torch': _worker_hf_torch}


def _check_guard(spec, result) -> None:
  """Stops the run if a peer's loss or gradient norm differs from bert_jax's."""
  ref = spec.get('reference')
  if not ref or 'guard' not in result:
    return
  rtol_loss, rtol_grad = GUARD_RTOL['gpu' if result['platform'] == 'gpu'
                                    else 'cpu']
  got = result['guard']
  for key, rtol in (('loss', rtol_loss), ('grad_norm', rtol_grad)):
    rel = abs(got[key] - ref[key]) / max(abs(ref[key]), 1e-12)
    result['guard'][f'{key}_rel_diff'] = rel
    if not rel <= rtol:
      raise AssertionError(
          f'{spec["impl"]} {spec["workload"]} {spec["size"]}: {key} '
          f'{got[key]:.8g} vs bert_jax {ref[key]:.8g} (relative difference '
          f'{rel:.2e} > {rtol:.0e}): the implementations do not compute the '
          'same thing, so their timings are not comparable')


def worker_main(spec_path: str) -> None:
  spec = json.loads(pathlib.Path(spec_path).read_text())
  load = os.getloadavg()[0]
  result = WORKERS[spec['impl']](spec)
  _check_guard(spec, result)
  result.update(impl=spec['impl'], workload=spec['workload'],
                size=spec['size'], batch=spec['batch'], seq=spec['seq'],
                remat=spec.get('remat', 'none'), loadavg_start=load)
  pathlib.Path(spec['out']).write_text(json.dumps(result))


# ==================================================================== parent
def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _run_worker(spec: dict[str, Any], tmp: pathlib.Path,
                timeout: Optional[float] = None) -> dict[str, Any]:
  """Runs one row in a fresh process; `timeout` seconds at most (then
  subprocess.TimeoutExpired)."""
  n = len(list(tmp.glob('spec-*.json')))
  spec_path, out = tmp / f'spec-{n}.json', tmp / f'result-{n}.json'
  spec = dict(spec, out=str(out))
  spec_path.write_text(json.dumps(spec))
  env = dict(os.environ, USE_TF='0', TF_CPP_MIN_LOG_LEVEL='2',
             TRANSFORMERS_VERBOSITY='error',
             PYTHONPATH=os.pathsep.join(
                 [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', f'--worker={spec_path}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0 or not out.exists():
    raise RuntimeError(
        f'benchmark worker {spec["impl"]}/{spec["workload"]}/{spec["size"]} '
        f'failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}')
  return json.loads(out.read_text())


def _probe() -> dict[str, Any]:
  """Device and versions, from a child process (so that the parent never
  holds a JAX backend, or GPU memory, while the workers run)."""
  code = ('import jax, json; d = jax.devices()[0]; '
          'print(json.dumps(dict(platform=d.platform, kind=d.device_kind, '
          'count=jax.device_count())))')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  if proc.returncode:
    raise RuntimeError(f'probing JAX failed:\n{proc.stderr[-3000:]}')
  info = json.loads(proc.stdout.strip().splitlines()[-1])
  versions = {}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'transformers', 'torch'):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      versions[pkg] = 'not installed'
  info['versions'] = versions
  info['cpu'] = bu.cpu_model()
  info['cores'] = bu.num_cores()
  return info


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
  """One row from the rounds of one (size, workload, impl): all step times
  pooled, the median first call, the largest memory, the mean load."""
  if len(results) == 1:
    return dict(results[0], rounds=1)
  out = dict(results[0], rounds=len(results))
  out['times'] = [t for r in results for t in r['times']]
  out['first_s'] = bu.median([r['first_s'] for r in results])
  mems = [r['mem_bytes'] for r in results if r['mem_bytes'] is not None]
  out['mem_bytes'] = max(mems) if mems else None
  out['loadavg_start'] = sum(r['loadavg_start'] for r in results) / len(results)
  out['per_round'] = [dict(times=r['times'], first_s=r['first_s'],
                           loadavg_start=r['loadavg_start']) for r in results]
  return out


def _summary(r: dict[str, Any]) -> dict[str, Any]:
  step = bu.median(r['times'])
  r = dict(r, step_s=step, tokens_per_s=r['batch'] * r['seq'] / step,
           spread=(max(r['times']) - min(r['times'])) / step)
  r['compile_s'] = (max(0.0, r['first_s'] - step)
                    if r['impl'] in ('bert_jax', 'hf_flax') else None)
  return r


def run_main(args) -> str:
  info = _probe()
  on_gpu = info['platform'] == 'gpu'
  sizes = args.sizes or (['tiny'] if args.quick else
                         ['small', 'minilm'] + (list(bu.GPU_ONLY_SIZES)
                                                if on_gpu else []))
  for s in sizes:
    if s not in bu.SIZES:
      raise SystemExit(f'--sizes: unknown size {s!r}; known: {list(bu.SIZES)}')
    if s in bu.GPU_ONLY_SIZES and not on_gpu:
      _log(f'warning: size {s!r} on CPU is meant for a GPU and will be slow')
  workloads = args.workloads or list(bu.WORKLOADS)
  repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
  warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
  scaling_repeats = (args.scaling_repeats if args.scaling_repeats is not None
                     else min(repeats, 3))
  torch_threads = args.torch_threads or info['cores']
  load_before = os.getloadavg()
  started = datetime.datetime.now(datetime.timezone.utc)
  _log(f'device: {info["platform"]} {info["kind"]} ({info["cpu"]}, '
       f'{info["cores"]} cores); load average before: {load_before[0]:.2f}')

  rows, scaling = [], []
  rounds = args.rounds
  with tempfile.TemporaryDirectory(prefix='bert_jax_bench_') as tmp_name:
    tmp = pathlib.Path(tmp_name)
    total = len(sizes) * len(workloads) * len(IMPLS) * rounds
    done = 0
    for size in sizes:
      arch = bu.SIZES[size]
      weights_dir = tmp / f'weights-{size}'
      for workload in workloads:
        base_spec = dict(workload=workload, size=size, arch=arch,
                         batch=arch['batch'], seq=arch['seq'], remat='none',
                         repeats=repeats, warmup=warmup, seed=args.seed,
                         weights_dir=str(weights_dir), guard=True,
                         torch_threads=torch_threads)
        per_impl = {impl: [] for impl in IMPLS}
        # Rounds alternate the implementations (A B C A B C ...), so that a
        # burst of load from elsewhere hits them alike instead of one alone.
        for _ in range(rounds):
          ref = None
          for impl in IMPLS:   # bert_jax first: it writes the weights
            t0 = time.perf_counter()
            r = _summary(_run_worker(
                dict(base_spec, impl=impl, reference=ref), tmp))
            done += 1
            if impl == 'bert_jax':
              ref = r['guard']
            _log(f'[{done}/{total}] {size:7s} {workload:9s} {impl:9s} '
                 f'{r["step_s"] * 1e3:9.1f} ms/step '
                 f'{r["tokens_per_s"]:10,.0f} tok/s  (load '
                 f'{r["loadavg_start"]:.2f}, {time.perf_counter() - t0:.0f} s)')
            per_impl[impl].append(r)
        rows += [_summary(_merge(per_impl[impl])) for impl in IMPLS]
    if args.scaling:
      grid = QUICK_SCALING_GRID if args.quick else SCALING_GRID
      size = args.scaling_size or ('tiny' if args.quick else 'small')
      arch = bu.SIZES[size]
      results = {cfg: [] for cfg in grid}
      for rnd in range(rounds):
        for i, (seq, batch, remat) in enumerate(grid):
          spec = dict(impl='bert_jax', workload='pretrain', size=size,
                      arch=arch, batch=batch, seq=seq, remat=remat,
                      repeats=scaling_repeats, warmup=warmup, seed=args.seed,
                      guard=False, weights_dir=str(tmp / f'weights-{size}'))
          r = _summary(_run_worker(spec, tmp))
          _log(f'[scaling {rnd * len(grid) + i + 1}/{rounds * len(grid)}] '
               f'T={seq} B={batch} remat={remat}: '
               f'{r["step_s"] * 1e3:.1f} ms/step')
          results[(seq, batch, remat)].append(r)
      scaling = [_summary(_merge(results[cfg])) for cfg in grid]
  load_after = os.getloadavg()
  text = render(rows, scaling, info=info, started=started,
                load_before=load_before, load_after=load_after,
                repeats=repeats, warmup=warmup, argv=sys.argv[1:],
                torch_threads=torch_threads, scaling_repeats=scaling_repeats,
                rounds=rounds)
  sys.stdout.write(text)
  if args.out:
    # Sections owned by other scripts (experiments/bench_epoch.py) stay.
    kept = bu.sections_after(args.out, '')
    pathlib.Path(args.out).write_text(text + ('\n' + kept if kept else ''))
    _log(f'wrote {args.out}')
  if args.json:
    # Every step time of every row, for analysis beyond the tables.
    pathlib.Path(args.json).write_text(json.dumps(dict(
        info=info, started=started.isoformat(), argv=sys.argv[1:],
        load_before=load_before, load_after=load_after, rows=rows,
        scaling=scaling), indent=1))
    _log(f'wrote {args.json}')
  return text


# ----------------------------------------------------------------- rendering
def _ratio(rows, size, workload, peer) -> Optional[float]:
  by = {r['impl']: r for r in rows if r['size'] == size
        and r['workload'] == workload}
  if 'bert_jax' not in by or peer not in by:
    return None
  return by['bert_jax']['tokens_per_s'] / by[peer]['tokens_per_s']


def _verdict(ratio: Optional[float], target: float) -> str:
  if ratio is None:
    return '—'
  return f'{"met" if ratio >= target else "NOT met"} ({ratio:.2f}x vs {target:g}x)'


def render(rows, scaling, *, info, started, load_before, load_after, repeats,
           warmup, argv, torch_threads=None, scaling_repeats=None,
           rounds=1) -> str:
  cores = info['cores']
  v = info['versions']
  device = (f'{info["kind"]} (GPU)' if info['platform'] == 'gpu'
            else f'CPU: {info["cpu"]}, {cores} cores')
  quiet = load_before[0] < 0.25 * cores
  out = ['# bert_jax benchmarks: train step vs HF Flax and HF PyTorch', '',
         'Generated by `python -m experiments.benchmark'
         + ''.join(f' {a}' for a in argv) + '`; do not edit by hand.', '',
         f'- date: {started.strftime("%Y-%m-%d %H:%M UTC")}',
         f'- device: {device}',
         f'- versions: jax {v["jax"]}, jaxlib {v["jaxlib"]}, flax {v["flax"]}, '
         f'optax {v["optax"]}, transformers {v["transformers"]}, '
         f'torch {v["torch"]}; Python {platform.python_version()}',
         f'- load average (1/5/15 min) before the run: '
         f'{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}; '
         f'after: {load_after[0]:.2f} / {load_after[1]:.2f} / '
         f'{load_after[2]:.2f} ({cores} cores)',
         f'- timing: median of {repeats} synchronised steps after the first '
         f'call and {warmup} untimed warm-up step(s)'
         + (f', pooled over {rounds} alternating rounds (a fresh process '
            'each)' if rounds > 1 else '')
         + '; fp32; dropout 0.1; '
         f'PyTorch threads: {torch_threads or cores}']
  if not quiet:
    out += ['', f'**Warning: the machine was not quiet (1-minute load '
            f'{load_before[0]:.2f} on {cores} cores before the run). These '
            'numbers are distorted by other work; re-run on an idle machine '
            'before drawing conclusions. PyTorch suffers most: its OpenMP '
            'threads wait on each other at every operator, so a descheduled '
            'thread stalls them all.**']

  if rows:
    out += ['', '## Train step throughput', '',
            'Tokens/s = batch x sequence length / median step time. Ratios are '
            'bert_jax tokens/s over the peer\'s (> 1: bert_jax faster).', '']
    header = ['workload', 'size', 'B x T', 'bert_jax tok/s', 'HF Flax tok/s',
              'HF PyTorch tok/s', 'bert_jax / HF Flax', 'bert_jax / HF PyTorch']
    table = []
    keys = sorted({(r['size'], r['workload']) for r in rows},
                  key=lambda k: (list(bu.SIZES).index(k[0]),
                                 bu.WORKLOADS.index(k[1])))
    for size, workload in keys:
      by = {r['impl']: r for r in rows if r['size'] == size
            and r['workload'] == workload}
      any_r = next(iter(by.values()))
      table.append([
          bu.WORKLOAD_TITLES[workload], size, f'{any_r["batch"]} x {any_r["seq"]}',
          *[bu.fmt_int(by[i]['tokens_per_s']) if i in by else '—' for i in IMPLS],
          bu.fmt(_ratio(rows, size, workload, 'hf_flax')) + 'x',
          bu.fmt(_ratio(rows, size, workload, 'hf_torch')) + 'x'])
    out.append(bu.markdown_table(header, table))

    out += ['', '## Step time, compile time, memory, equal-work check', '',
            'Step: median ms (spread = (max - min) / median over the repeats). '
            'Compile: first call minus a steady step (JAX only; PyTorch is '
            'eager). GFLOP/step: XLA\'s cost analysis of the lowered step '
            '(JAX only; the arithmetic asked for, whatever the load). '
            'Memory: peak during the timed train steps (after compilation) '
            'minus the process\'s memory before the model was built'
            + (' (host RSS, MiB: params, optimizer state, activations, '
               'compiled code).' if info['platform'] == 'cpu'
               else ' (device allocator peak, MiB).')
            + ' Guard: the relative difference of the peer\'s loss / gradient '
            'norm from bert_jax\'s on the same weights and batch, dropout off. '
            'Load: 1-minute load average when the row started (mean over '
            'rounds).', '']
    header = ['workload', 'size', 'impl', 'step ms', 'spread', 'compile s',
              'GFLOP/step', 'memory MiB', 'guard loss', 'guard grad', 'load']
    table = []
    for size, workload in keys:
      for impl in IMPLS:
        r = next((r for r in rows if r['size'] == size
                  and r['workload'] == workload and r['impl'] == impl), None)
        if r is None:
          continue
        g = r.get('guard', {})
        rel = lambda k: ('ref %.4g' % g[k.replace('_rel_diff', '')]
                         if impl == 'bert_jax' and g
                         else ('%.1e' % g[k] if k in g else '—'))
        table.append([bu.WORKLOAD_TITLES[workload], size, IMPL_TITLES[impl],
                      bu.fmt(r['step_s'] * 1e3, 1), f'{r["spread"]:.0%}',
                      bu.fmt(r['compile_s'], 1),
                      bu.sig(r.get('hlo_gflops')), bu.mib(r['mem_bytes']),
                      rel('loss_rel_diff'), rel('grad_norm_rel_diff'),
                      f'{r["loadavg_start"]:.2f}'])
    out.append(bu.markdown_table(header, table))

    out += ['', '## Targets', '',
            'From the issue: on CPU the pretraining step at least 2.0x HF '
            'Flax tokens/s, the fine-tuning steps no slower than HF Flax '
            '(1.0x), and at least 1.5x HF PyTorch everywhere. "FLOP ratio" '
            'is HF Flax\'s GFLOP/step over bert_jax\'s (from XLA, '
            'independent of load): the speed-up over HF Flax that doing less '
            'arithmetic alone would give at equal efficiency.', '']
    table = []
    for size, workload in keys:
      flops = {r['impl']: r.get('hlo_gflops') for r in rows
               if r['size'] == size and r['workload'] == workload}
      flop_ratio = (flops['hf_flax'] / flops['bert_jax']
                    if flops.get('hf_flax') and flops.get('bert_jax') else None)
      table.append([bu.WORKLOAD_TITLES[workload], size,
                    _verdict(_ratio(rows, size, workload, 'hf_flax'),
                             TARGETS[(workload, 'hf_flax')]),
                    _verdict(_ratio(rows, size, workload, 'hf_torch'),
                             TARGETS[(workload, 'hf_torch')]),
                    bu.fmt(flop_ratio) + ('x' if flop_ratio else '')])
    out.append(bu.markdown_table(['workload', 'size', 'vs HF Flax',
                                  'vs HF PyTorch', 'FLOP ratio'], table))
    if not quiet:
      out += ['', 'Verdicts from a loaded machine are provisional.']

  if scaling:
    size = scaling[0]['size']
    out += ['', f'## How bert_jax\'s step cost grows ({size}, MLM+NSP '
            'pretraining)', '',
            'P (masked slots) scales with T: 20 at T=128, 40 at T=256. '
            '"relative" is the step time over the first row\'s; "per token" '
            'the step time per token over the first row\'s (1.00 = cost '
            f'linear in B x T). Median of {scaling_repeats or repeats} steps'
            + (f' x {rounds} rounds.' if rounds > 1 else '.'),
            '']
    base = scaling[0]
    table = []
    for r in scaling:
      rel = r['step_s'] / base['step_s']
      per_tok = rel * (base['batch'] * base['seq']) / (r['batch'] * r['seq'])
      table.append([r['seq'], r['batch'], r['remat'],
                    bu.fmt(r['step_s'] * 1e3, 1), bu.fmt_int(r['tokens_per_s']),
                    f'{rel:.2f}', f'{per_tok:.2f}', bu.fmt(r['compile_s'], 1),
                    bu.sig(r.get('hlo_gflops')), bu.mib(r['mem_bytes']),
                    f'{r["loadavg_start"]:.2f}'])
    out.append(bu.markdown_table(
        ['T', 'B', 'remat', 'step ms', 'tok/s', 'relative', 'per token',
         'compile s', 'GFLOP/step', 'memory MiB', 'load'], table))

  out += ['', '## Method', '', *_METHOD_NOTES]
  return '\n'.join(out) + '\n'


_METHOD_NOTES = [
    '- Same step: one train step (forward, backward, global-norm clipping at '
    '1.0, AdamW with eps 1e-6, weight decay 0.01 off LayerNorm/bias, linear '
    'warmup/decay schedule) on the same config, weights, batch and length. '
    'Before timing, each peer must reproduce bert_jax\'s loss and gradient '
    'norm on the exported weights with dropout off (tolerance 1e-4 / 1e-3 '
    'relative in fp32 on CPU), or the run stops.',
    '- bert_jax: `jax.jit(train.train_step, donate_argnums=0)` around the '
    'real task `train_loss` (PretrainingTask, ClassificationTask, '
    'TaggingTask with `losses` \'dice\'), optimizer from '
    '`optim.make_optimizer`; this includes the trainer\'s metrics and its '
    'non-finite-step guard.',
    '- HF Flax: `FlaxBertFor*` under `jax.jit` with the train state donated, '
    'optax `clip_by_global_norm` + `adamw` with the same mask. Its MLM loss '
    'is a cross-entropy over all T positions with label -100 off the masked '
    'ones, because `FlaxBertForPreTraining` computes the [B, T, vocab] '
    'logits at every position. That is the same loss value as bert_jax\'s '
    '(which gathers the P masked positions first and runs the MLM head on '
    'B x P rows only), but not the same cost: the difference in the '
    'pretraining rows is mostly this. It also multiplies every attention '
    'map by a head mask of ones (HF\'s default).',
    '- Same loss, less work where the heads read few positions: bert_jax runs '
    'its last encoder layer\'s queries, attention output and FFN only at the '
    'positions the heads read (`config.model.last_layer_at_outputs`, on by '
    'default): the P masked slots plus [CLS] in pretraining, [CLS] alone in '
    'the pooler classifier (about 1/L of the encoder, 14% of the MiniLM '
    'classifier\'s FLOPs). The peers run it at all T positions. The GFLOP '
    'column is each implementation\'s own XLA / formula count, so a ratio '
    'there is work saved, and tokens/s per GFLOP is per-FLOP efficiency. '
    'Tagging reads every position and does the same work as the peers.',
    '- HF PyTorch: `BertFor*` eager, default (SDPA) attention, '
    '`torch.optim.AdamW` default implementation, `clip_grad_norm_`, '
    '`torch.set_num_threads(cores)`; its pretraining loss is HF\'s own '
    '(CE over all positions, ignore_index -100).',
    '- Token tagging uses the one-vs-rest set-level dice loss '
    '(Li et al. 2020, gamma 1): `losses.from_config({"name": "dice"})` in '
    'bert_jax, the same formula in jnp / torch for the peers. '
    'BertForTokenClassification in bert_jax keeps an (unused) pooler whose '
    'zero gradients the optimizer still updates; HF\'s has none.',
    '- Every (size, workload, implementation) runs in a fresh process that '
    'imports only its framework. Batches are synthetic, full length (no '
    'padding: none of the implementations skips it).',
    '- On CPU, memory is the host peak RSS during the timed train steps '
    '(`/proc/self/status` VmHWM, reset after the first call and warm-up, so '
    'the compiler\'s transient peak is not counted) minus the RSS before '
    'the model was built; on GPU the device allocator\'s peak (JAX: since '
    'the process started, guard and compilation included; torch: of the '
    'timed steps).',
]


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  csv = lambda s: [x for x in s.split(',') if x]
  p.add_argument('--sizes', type=csv, default=None,
                 help='comma-separated: ' + ','.join(bu.SIZES) +
                 ' (default small,minilm; + base,large on GPU)')
  p.add_argument('--workloads', type=csv, default=None,
                 help='comma-separated subset of ' + ','.join(bu.WORKLOADS))
  p.add_argument('--repeats', type=int, default=None,
                 help='timed steps per row (default 5; 1 with --quick)')
  p.add_argument('--warmup', type=int, default=None,
                 help='untimed steps after the first call (default 1; 0 '
                 'with --quick)')
  p.add_argument('--out', default='BENCHMARKS.md',
                 help='Markdown file to write ("" for none)')
  p.add_argument('--json', default='',
                 help='also write the raw per-row results (all step times) '
                 'to this JSON file')
  p.add_argument('--rounds', type=int, default=1,
                 help='run every row this many times, alternating the '
                 'implementations, and pool the step times (steadier on a '
                 'shared machine; costs rounds x the time)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--no-scaling', dest='scaling', action='store_false',
                 help='skip the sequence length / batch / remat table')
  p.add_argument('--scaling-size', default=None,
                 help='size of the scaling table (default small)')
  p.add_argument('--scaling-repeats', type=int, default=None,
                 help='timed steps per scaling row (default min(repeats, 3))')
  p.add_argument('--torch-threads', type=int, default=None,
                 help='torch.set_num_threads for HF PyTorch (default: the '
                 'number of cores this process may use)')
  p.add_argument('--quick', action='store_true',
                 help='smoke test: the tiny size, 1 repeat, a 2-row scaling '
                 'table')
  p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for w in args.workloads or ():
    if w not in bu.WORKLOADS:
      p.error(f'--workloads: unknown {w!r}; known: {bu.WORKLOADS}')
  if args.repeats is not None and args.repeats < 1:
    p.error('--repeats must be >= 1')
  if args.warmup is not None and args.warmup < 0:
    p.error('--warmup must be >= 0')
  if args.scaling_repeats is not None and args.scaling_repeats < 1:
    p.error('--scaling-repeats must be >= 1')
  if args.rounds < 1:
    p.error('--rounds must be >= 1')
  if args.torch_threads is not None and args.torch_threads < 1:
    p.error('--torch-threads must be >= 1')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    worker_main(args.worker)
  else:
    run_main(args)


if __name__ == '__main__':
  main()
