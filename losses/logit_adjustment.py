"""Logit adjustment (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021).

With class prior `pi` (from training-set counts) and temperature `tau`:

* loss form (`logit_adjusted_ce`): softmax CE on `z + tau log pi`,
    `l_i = -log softmax(z_i + tau log pi)_{y_i}`;
  the model's raw logits then estimate the balanced (prior-free) posterior.
* post-hoc form (`adjust_logits`): train with plain CE and predict with
  `argmax_c z_c - tau log pi_c`.

Menon et al. use tau = 1 (loss) and tune tau post hoc. Use one form, not
both: a model trained with the loss form is already adjusted.
"""

import jax.numpy as jnp

from losses import _checks
from losses import class_weights
from losses import cross_entropy


def _log_prior(loss, class_counts_or_prior, num_classes):
  if _checks.is_concrete(class_counts_or_prior):
    class_weights.validate_counts(loss, class_counts_or_prior, num_classes,
                                  key='class_counts')
  return class_weights.log_prior(class_counts_or_prior)


def logit_adjusted_ce(logits, labels, *, weights=None, class_counts, tau=1.0,
                      reduction='mean'):
  """Logit-adjusted softmax cross-entropy.

  Args:
    logits, labels, weights: `[..., C]` float, `[...]` int, `[...]` or None.
    class_counts: `[C]` positive counts (or a prior; only ratios matter).
    tau: temperature >= 0; 0 is plain CE.
    reduction: 'mean' | 'sum' | 'none' (`[...]`).
  """
  _checks.check_range('logit_adjusted_ce', 'tau', tau, lo=0)
  logits = jnp.asarray(logits)
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  log_pi = _log_prior('logit_adjusted_ce', class_counts, logits.shape[-1])
  adjusted = logits.astype(dtype) + tau * log_pi.astype(dtype)
  return cross_entropy.ce(adjusted, labels, weights=weights,
                          reduction=reduction)


def adjust_logits(logits, class_counts_or_prior, tau=1.0):
  """Post-hoc adjustment for prediction: `z - tau log pi`, shape `[..., C]`.

  Args:
    logits: `[..., C]` float (any precision; returned in >= fp32).
    class_counts_or_prior: `[C]` positive counts or prior probabilities.
    tau: >= 0 (Menon et al. tune it on held-out data; 1 is the Bayes rule
      for the balanced error).

  Returns:
    Adjusted logits `[..., C]`; take their argmax.
  """
  _checks.check_range('adjust_logits', 'tau', tau, lo=0)
  logits = jnp.asarray(logits)
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  log_pi = _log_prior('adjust_logits', class_counts_or_prior, logits.shape[-1])
  return logits.astype(dtype) - tau * log_pi.astype(dtype)
