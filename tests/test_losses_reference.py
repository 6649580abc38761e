"""Independent float64 NumPy implementations of each loss's paper formula.

Written from the formulas (loops and direct expressions, no shared code with
`losses`), for the tests in test_losses.py (no tests are collected here).
"""

import numpy as np

TINY = np.finfo(np.float32).tiny


def softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def wmean(per, w, reduction='mean'):
  """'mean': sum(w l) / max(sum(w), tiny); 'sum': sum(w l); 'none': w l."""
  per = np.broadcast_to(per, np.shape(w)) if reduction == 'none' else per
  if reduction == 'none':
    return np.where(w > 0, w * per, 0.0)
  total = (w * per).sum()
  return float(total if reduction == 'sum' else total / max(w.sum(), TINY))


def pick(a, y):
  """a[..., y[...]]."""
  return np.take_along_axis(a, y[..., None], -1)[..., 0]


def ce(x, y, w, label_smoothing=0.0, reduction='mean'):
  c = x.shape[-1]
  q = (1 - label_smoothing) * np.eye(c)[y] + label_smoothing / c
  return wmean(-(q * log_softmax(x)).sum(-1), w, reduction)


def bce(x, y, w, label_smoothing=0.0, pos_weight=1.0, reduction='mean'):
  y = y * (1 - label_smoothing) + label_smoothing / 2
  log_p, log_1mp = -np.logaddexp(0, -x), -np.logaddexp(0, x)
  return wmean(-(pos_weight * y * log_p + (1 - y) * log_1mp), w, reduction)


def weighted_ce(x, y, w, alpha, reduction='mean'):
  return wmean(-np.asarray(alpha)[y] * pick(log_softmax(x), y), w, reduction)


def class_balanced_alpha(counts, beta):
  counts = np.asarray(counts, np.float64)
  effective = (1 - beta ** counts) / (1 - beta)
  a = 1 / effective
  return a * len(counts) / a.sum()


def focal(x, y, w, gamma, alpha=None, reduction='mean'):
  pt = pick(softmax(x), y)
  a = np.ones(x.shape[-1]) if alpha is None else np.asarray(alpha)
  return wmean(-a[y] * (1 - pt) ** gamma * np.log(pt), w, reduction)


def sigmoid_focal(x, y, w, gamma, alpha=0.25, reduction='mean'):
  p = sigmoid(x)
  pt = np.where(y == 1, p, 1 - p)
  at = 1.0 if alpha is None else np.where(y == 1, alpha, 1 - alpha)
  return wmean(-at * (1 - pt) ** gamma * np.log(pt), w, reduction)


def ghm_sequence(batches, *, bins, momentum, bias_correction, sigmoid_form):
  """mmdetection-style GHM-C loop over bins; returns per-batch (loss, acc)."""
  edges = np.arange(bins + 1) / bins
  edges[-1] += 1e-6
  acc = np.zeros(bins)
  updates = np.zeros(bins)
  out = []
  for x, y, w in batches:
    if sigmoid_form:
      p = sigmoid(x)
      g = np.abs(p - y)
      per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
      ww = np.broadcast_to(w[..., None], x.shape) if w.ndim < x.ndim else w
    else:
      pt = pick(softmax(x), y)
      g = 1 - pt
      per = -np.log(pt)
      ww = w
    g, per, ww = g.ravel(), per.ravel(), ww.ravel()
    tot = ww.sum()
    beta = np.zeros_like(g)
    n = 0
    for i in range(bins):
      inds = (g >= edges[i]) & (g < edges[i + 1]) & (ww > 0)
      num = ww[inds].sum()
      if num > 0:
        acc[i] = momentum * acc[i] + (1 - momentum) * num
        updates[i] += 1
        density = acc[i]
        if bias_correction:
          density = acc[i] / (1 - momentum ** updates[i])
        beta[inds] = tot / density
        n += 1
    if n > 0:
      beta /= n
    loss = (beta * ww * per).sum() / max(tot, 1.0)
    out.append((loss, acc.copy(), updates.copy()))
  return out


def _ovr(x, y, binary):
  """(p1, y1) of shape [N, K] for the binary or one-vs-rest problem."""
  if binary:
    return sigmoid(x).reshape(-1, 1), y.reshape(-1, 1).astype(np.float64)
  c = x.shape[-1]
  return softmax(x).reshape(-1, c), np.eye(c)[y].reshape(-1, c)


def dsc(x, y, w, alpha, gamma, binary, form='ovr', reduction='mean'):
  """Per instance: 'ovr' the mean over the K problems of
  1 - (2 f y + g) / (f + y + g), f = (1 - p)^a p; 'gold' only the gold
  class's term 1 - (2 f_t + g) / (f_t + 1 + g) (binary: p_t = p if y = 1,
  else 1 - p)."""
  p, yy = _ovr(x, y, binary)
  per = []
  for pi, yi in zip(p, yy):
    if form == 'gold':
      pt = (pi[0] if yi[0] == 1 else 1 - pi[0]) if binary else pi[yi == 1][0]
      ft = (1 - pt) ** alpha * pt
      per.append(1 - (2 * ft + gamma) / (ft + 1 + gamma))
    else:
      f = (1 - pi) ** alpha * pi
      per.append(np.mean(1 - (2 * f * yi + gamma) / (f + yi + gamma)))
  per = np.asarray(per).reshape(np.shape(w))
  return wmean(per, w, reduction)


def _set_loss(one_set, x, y, w, binary, batch, exclude, class_weights,
              reduction):
  """Mean over included classes (weighted) of `one_set(p, t, w) -> float`,
  over the whole batch or per instance (axis 0) then reduced over the
  instances with an unmasked element ('none': per instance, 0 if none)."""
  if not binary:
    c = x.shape[-1]
  keep = np.ones(1 if binary else c)
  for k in exclude:
    keep[k] = 0.0
  if class_weights is not None:
    keep = keep * np.asarray(class_weights, np.float64)
  groups = [(x, y, w)] if batch else list(zip(x, y, w))
  per = []
  for xi, yi, wi in groups:
    p, t = _ovr(np.asarray(xi), np.asarray(yi), binary)
    wv = np.asarray(wi, np.float64).reshape(-1)
    ls = np.array([one_set(p[:, k], t[:, k], wv) for k in range(p.shape[1])])
    per.append((keep * ls).sum() / keep.sum() if wv.sum() != 0 else 0.0)
  per = np.asarray(per)
  if batch:
    return float(per[0])
  present = np.array([np.asarray(wi).sum() != 0 for _, _, wi in groups])
  if reduction == 'none':
    return per
  if reduction == 'sum':
    return float(per.sum())
  return float(per[present].mean()) if present.any() else 0.0


def dice(x, y, w, gamma, binary, smooth_nr=None, smooth_dr=None, batch=True,
         exclude=(), class_weights=None, reduction='mean'):
  """1 - (2 sum w p t + s_nr) / (sum w p^2 + sum w t^2 + s_dr) per class."""
  nr = gamma if smooth_nr is None else smooth_nr
  dr = gamma if smooth_dr is None else smooth_dr

  def one(p, t, wv):
    return 1 - (2 * (wv * p * t).sum() + nr) / (
        (wv * p ** 2).sum() + (wv * t ** 2).sum() + dr)
  return _set_loss(one, x, y, w, binary, batch, exclude, class_weights,
                   reduction)


def tversky(x, y, w, alpha, beta, gamma, binary, smooth_nr=None,
            smooth_dr=None, batch=True, exclude=(), class_weights=None,
            reduction='mean'):
  """1 - (TP + s_nr) / (TP + alpha FP + beta FN + s_dr) per class."""
  nr = gamma if smooth_nr is None else smooth_nr
  dr = gamma if smooth_dr is None else smooth_dr

  def one(p, t, wv):
    tp = (wv * p * t).sum()
    fp = (wv * p * (1 - t)).sum()
    fn = (wv * (1 - p) * t).sum()
    return 1 - (tp + nr) / (tp + alpha * fp + beta * fn + dr)
  return _set_loss(one, x, y, w, binary, batch, exclude, class_weights,
                   reduction)


def logit_adjusted_ce(x, y, w, counts, tau, reduction='mean'):
  counts = np.asarray(counts, np.float64)
  return ce(x + tau * np.log(counts / counts.sum()), y, w, 0.0, reduction)


def multilabel_ce(x, y, w, reduction='mean'):
  xs = x.reshape(-1, x.shape[-1])
  ys = y.reshape(-1, x.shape[-1])
  per = []
  for s, t in zip(xs, ys):
    neg = s[t == 0]
    pos = s[t == 1]
    per.append(np.log(1 + np.exp(neg).sum()) + np.log(1 + np.exp(-pos).sum()))
  return wmean(np.asarray(per).reshape(np.shape(w)), w, reduction)
