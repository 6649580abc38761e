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


def wmean(per, w):
  return float((w * per).sum() / max(w.sum(), TINY))


def pick(a, y):
  """a[..., y[...]]."""
  return np.take_along_axis(a, y[..., None], -1)[..., 0]


def ce(x, y, w, label_smoothing=0.0):
  c = x.shape[-1]
  q = (1 - label_smoothing) * np.eye(c)[y] + label_smoothing / c
  return wmean(-(q * log_softmax(x)).sum(-1), w)


def bce(x, y, w, label_smoothing=0.0, pos_weight=1.0):
  y = y * (1 - label_smoothing) + label_smoothing / 2
  p = sigmoid(x)
  return wmean(-(pos_weight * y * np.log(p) + (1 - y) * np.log(1 - p)), w)


def weighted_ce(x, y, w, alpha):
  return wmean(-np.asarray(alpha)[y] * pick(log_softmax(x), y), w)


def class_balanced_alpha(counts, beta):
  counts = np.asarray(counts, np.float64)
  effective = (1 - beta ** counts) / (1 - beta)
  a = 1 / effective
  return a * len(counts) / a.sum()


def focal(x, y, w, gamma, alpha=None):
  pt = pick(softmax(x), y)
  a = np.ones(x.shape[-1]) if alpha is None else np.asarray(alpha)
  return wmean(-a[y] * (1 - pt) ** gamma * np.log(pt), w)


def sigmoid_focal(x, y, w, gamma, alpha=0.25):
  p = sigmoid(x)
  pt = np.where(y == 1, p, 1 - p)
  at = 1.0 if alpha is None else np.where(y == 1, alpha, 1 - alpha)
  return wmean(-at * (1 - pt) ** gamma * np.log(pt), w)


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


def dsc(x, y, w, alpha, gamma, binary):
  p, yy = _ovr(x, y, binary)
  f = (1 - p) ** alpha * p
  per = (1 - (2 * f * yy + gamma) / (f + yy + gamma)).mean(-1)
  return wmean(per, w.reshape(-1))


def dice(x, y, w, gamma, binary):
  p, yy = _ovr(x, y, binary)
  if w.sum() == 0:
    return 0.0
  ww = w.reshape(-1, 1)
  losses = []
  for k in range(p.shape[1]):
    inter = (ww[:, 0] * p[:, k] * yy[:, k]).sum()
    den = (ww[:, 0] * p[:, k] ** 2).sum() + (ww[:, 0] * yy[:, k] ** 2).sum()
    losses.append(1 - (2 * inter + gamma) / (den + gamma))
  return float(np.mean(losses))


def tversky(x, y, w, alpha, beta, gamma, binary):
  p1, y1 = _ovr(x, y, binary)
  if w.sum() == 0:
    return 0.0
  ww = w.reshape(-1)
  losses = []
  for k in range(p1.shape[1]):
    p, t = p1[:, k], y1[:, k]
    tp = (ww * p * t).sum()
    fp = (ww * p * (1 - t)).sum()
    fn = (ww * (1 - p) * t).sum()
    losses.append(1 - (tp + gamma) / (tp + alpha * fp + beta * fn + gamma))
  return float(np.mean(losses))


def logit_adjusted_ce(x, y, w, counts, tau):
  counts = np.asarray(counts, np.float64)
  return ce(x + tau * np.log(counts / counts.sum()), y, w)


def multilabel_ce(x, y, w):
  xs = x.reshape(-1, x.shape[-1])
  ys = y.reshape(-1, x.shape[-1])
  per = []
  for s, t in zip(xs, ys):
    neg = s[t == 0]
    pos = s[t == 1]
    per.append(np.log(1 + np.exp(neg).sum()) + np.log(1 + np.exp(-pos).sum()))
  return wmean(np.asarray(per), w.reshape(-1))
