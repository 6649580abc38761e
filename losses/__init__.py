"""Losses for imbalanced classification and tagging, as pure JAX functions.

Each loss is its formula in jnp, jittable and vmappable, computed in at
least fp32 (bf16 upcast first; fp64 stays fp64 under x64), with the stable
forms it needs (log_softmax, log_sigmoid, log(1 - p) from the other
classes' mass, focal's modulator in log space) and autodiff gradients; no
code path depends on the array shape or the platform. Conventions:

  stateless:  fn(logits, labels, *, weights=None, reduction='mean',
                 **hparams) -> loss
  stateful:   fn(logits, labels, *, weights=None, state, **hparams)
                  -> (scalar, new_state)                # GHM; init_state()
  from config: spec = from_config(cfg, num_classes=C, class_counts=None)
               loss, state = spec(logits, labels, weights=w, state=state,
                                  reduction='mean')

Shapes. Softmax losses: logits `[..., C]`, int labels `[...]` (C may be a
sequence length: span-QA start/end logits `[B, T]` with positions `[B]`).
Sigmoid losses: logits `[...]` (binary) or `[..., C]` (multi-label), 0/1
labels of the same shape, weights of that shape or `logits.shape[:-1]`;
`bce`, `sigmoid_focal` and `sigmoid_ghm` also take int class ids `[...]`
with logits `[..., C]`, read as one-hot (one-vs-rest).
`weights` default to ones; 0 masks padding (whose NaN or label -100
changes neither value nor gradient). An unmasked class id outside `[0, C)`
makes the loss NaN, so a label bug stops training instead of wrapping.

Reduction over elements (a softmax row, or a sigmoid logit): 'mean' (the
default) `sum(w l) / max(sum(w), tiny)`, so an all-masked batch gives 0;
'sum' `sum(w l)`; 'none' `w l` per element (masked ones exactly 0). Losses
marked "set" below are defined on a whole set (their sums run over every
unmasked element, so they depend on the batch composition): 'mean' only,
'none' raises (dice / tversky with batch=False are per instance and take
all three). GHM's normaliser is global too: 'mean' only.

Registry names (`get(name)`, `from_config(dict(name=...))`), formulas
(`p = softmax(z)` or `sigmoid(z)`, `y` the label) and sources:

  ce                  -sum_c q_c log p_c, q = (1-eps) onehot(y) + eps/C
                      [label_smoothing=0]           Szegedy et al. CVPR 2016
  bce                 -[pw y log s(z) + (1-y) log s(-z)]
                      [label_smoothing=0, pos_weight=None]
  weighted_ce         -alpha_y log p_y               [alpha: [C] list, or
                      'inverse_freq' | 'inverse_sqrt_freq' |
                      'class_balanced' (+beta) from class_counts]
  class_balanced_ce   weighted_ce, alpha_c ∝ (1-beta)/(1-beta^n_c), sum C
                      [beta=0.999]                  Cui et al. CVPR 2019
  focal               -alpha_y (1-p_y)^gamma log p_y [gamma=2, alpha=None
                      (list or scheme as weighted_ce)]  Lin et al. ICCV 2017
  sigmoid_focal       -alpha_t (1-p_t)^gamma log p_t per logit
                      [gamma=2, alpha=0.25]          Lin et al. ICCV 2017
  ghm      (state)    CE_i / (n_bins_nonempty * R_bin(g_i)), g = 1 - p_y,
                      R = EMA of the weighted bin counts
                      [bins=30, momentum=0.75, bias_correction=True]
                                                    Li et al. AAAI 2019
  sigmoid_ghm (state) same with BCE, g = |s(z) - y|  Li et al. AAAI 2019
  dsc                 1 - (2 (1-p)^a p y + g) / ((1-p)^a p + y + g) per
                      instance, mean over classes ('ovr') or the gold
                      class's term only ('gold'); optimum p = 1/(1+a)
                      [alpha=1, gamma=1, form='ovr']  Li et al. ACL 2020
  dice     (set)      1 - (2 sum p y + s_nr) / (sum p^2 + sum y^2 + s_dr)
                      [gamma=1, smooth_nr=smooth_dr=gamma, batch=True,
                      exclude=(), class_weights=None]
                                          Li et al. ACL 2020 (Milletari 2016)
  tversky  (set)      1 - (TP + s_nr) / (TP + a FP + b FN + s_dr)
                      [alpha=0.3, beta=0.7, gamma=1, and dice's set keys]
                                                    Li et al. ACL 2020
  logit_adjusted_ce   CE on z + tau log pi, pi from class_counts
                      [tau=1]                       Menon et al. ICLR 2021
  multilabel_ce       log(1 + sum_neg e^s) + log(1 + sum_pos e^-s) per
                      example                       Su 2020 (ZLPR 2022)

dsc / dice / tversky: binary form with logits `[...]` and 0/1 labels, or
multi-class one-vs-rest form (mean over classes) with logits `[..., C]` and
int labels; the shapes pick the form.

Keys any config may add: `flood=b`, flooding `|L - b| + b` on the batch
loss (Ishida et al. ICML 2020); `ce_weight=lambda`, the value `L + lambda *
ce` (MONAI's DiceCE; BCE for labels of the logits' shape);
`ce_warmup_steps=N`, CE alone for the first N calls, then L (the step count
is loss state: `{'step': int32}`, merged with GHM's).

Not registry losses but part of the package:
  flooding: `losses.flooding.flood` / `flooded`.
  logit_adjustment.adjust_logits(logits, class_counts_or_prior, tau): the
    post-hoc prediction rule `z - tau log pi` (Menon et al. 2021).
  class_weights: inverse_freq, inverse_sqrt_freq, class_balanced, log_prior.

See losses/README.md for a which-loss-when guide and benchmarks.
"""

from losses import class_weights
from losses import cross_entropy
from losses import dice
from losses import flooding
from losses import focal
from losses import ghm
from losses import logit_adjustment
from losses import multilabel
from losses.registry import check_keys
from losses.registry import from_config
from losses.registry import get
from losses.registry import LossSpec
from losses.registry import names

__all__ = ['LossSpec', 'check_keys', 'class_weights', 'cross_entropy', 'dice',
           'flooding', 'focal', 'from_config', 'get', 'ghm',
           'logit_adjustment', 'multilabel', 'names']
