"""PyTorch references for W1-W4: the same workloads as a PyTorch user writes them.

torch is not a dependency of splitjax. benchmarks/run.py runs these only when
`import torch` works (it does on the GPU machines, and on a CPU with
`pip install torch`). Each reference takes the very inputs of the JAX workload
(initial params, captured views and data, exported to numpy), runs on torch's
best device (CUDA when there is one), and is timed like the JAX side: median
of repeated runs after one warm-up, with the device synchronised before each
clock read.

What each one is (idiomatic eager PyTorch, fp32; on a GPU, matmuls in TF32,
torch's 'high' precision, which is what JAX's default precision does there):
- W1: per step, torch.func.vmap over records x candidates x labels of
  torch.func.grad of the record loss w.r.t. h; L2 argmin. Records go in
  chunks of `record_chunk` so the message buffer stays bounded.
- W2: nn.Module server tower and head; per batch, the head's loss summed and
  back-propagated once (h detached, so h.grad holds the per-record
  messages), messages clipped and noised, then h.backward(sent / B); Adam on
  both halves.
- W3: the 16 settings of W2 one after another, each with its test AUC.
- W4: all records x restarts in one batch; the message is dl/dh by autograd
  with create_graph (the label in closed form from dlogit/dh), the matching
  loss back-propagated to the relaxed inputs; torch.optim.Adam; the best
  restart by the exact (ReLU) loss, as in splitjax.attacks.gradmatch.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # torch is optional: run.py reports "not run".
  torch = None


def available() -> bool:
  return torch is not None


def device():
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe() -> str:
  dev = device()
  name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
  return f"torch {torch.__version__} on {name}"


def _sync():
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def timed(fn, repeats: int):
  """(median seconds, last result) of `repeats` runs after one warm-up."""
  torch.set_float32_matmul_precision("high")
  result = fn()
  _sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    _sync()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def _t(a, dtype=None):
  return torch.as_tensor(np.array(a), dtype=dtype, device=device())


def _cpu(a):
  """A writable CPU copy of a numpy-able array (for copying into modules)."""
  return torch.from_numpy(np.array(a))


def _head_tensors(device_params):
  """(W1 [..., d+P, H], b1 [..., H], w2 [..., H], b2 [...]) of a one-layer,
  one-logit head, from flax params with any leading axes."""
  p = device_params["params"]
  return (_t(p["hidden_0"]["kernel"]), _t(p["hidden_0"]["bias"]),
          _t(p["logits"]["kernel"])[..., 0], _t(p["logits"]["bias"])[..., 0])


# --- W1 EXACT --------------------------------------------------------------


def w1(view, p_all, repeats: int, record_chunk: int = 64):
  """view: a ServerView of one setting, [steps, B] (numpy-able leaves);
  p_all: [C, P] every private combination's head input. Returns (seconds,
  argmin index [steps * B] over combination * 2 + label)."""
  w1_, b1, w2, b2 = _head_tensors(view.device_params)  # [steps, 1, ...]
  h, m = _t(view.h), _t(view.messages)
  p_all = _t(p_all)
  labels = torch.tensor([0.0, 1.0], device=device())
  steps, batch, d = h.shape

  def loss(h_, p, y, k, b, w, c):
    pre = torch.cat([h_, p]) @ k + b
    return F.binary_cross_entropy_with_logits(torch.relu(pre) @ w + c, y)

  msg = torch.func.grad(loss)  # w.r.t. h_
  per_label = torch.func.vmap(msg, (None, None, 0, None, None, None, None))
  per_cand = torch.func.vmap(per_label, (None, 0, None, None, None, None, None))
  per_record = torch.func.vmap(per_cand, (0, None, None, None, None, None, None))

  def run():
    out = []
    for s in range(steps):
      for i in range(0, batch, record_chunk):
        sl = slice(i, i + record_chunk)
        msgs = per_record(h[s, sl], p_all, labels, w1_[s, 0], b1[s, 0], w2[s, 0],
                          b2[s, 0])                          # [r, C, 2, d]
        dist = ((msgs - m[s, sl, None, None]) ** 2).sum(-1)
        out.append(dist.reshape(dist.shape[0], -1).argmin(-1))
    return torch.cat(out)

  seconds, index = timed(run, repeats)
  return seconds, index.cpu().numpy()


# --- W2 training and W3 sweep ----------------------------------------------


class Server(torch.nn.Module if torch else object):
  """The server tower of splitjax.models.ServerTower, from its flax params."""

  def __init__(self, params):
    super().__init__()
    p = params["params"]
    self.embeds = torch.nn.ModuleList()
    j = 0
    while f"embed_{j}" in p:
      table = np.asarray(p[f"embed_{j}"]["embedding"])
      e = torch.nn.Embedding(*table.shape)
      e.weight.data.copy_(_cpu(table))
      self.embeds.append(e)
      j += 1
    self.layers = torch.nn.ModuleList()
    names = sorted((k for k in p if k.startswith("hidden_")), key=lambda k: int(k[7:]))
    for name in names + ["cut"]:
      kernel = np.asarray(p[name]["kernel"])
      layer = torch.nn.Linear(*kernel.shape)
      layer.weight.data.copy_(_cpu(kernel.T))
      layer.bias.data.copy_(_cpu(p[name]["bias"]))
      self.layers.append(layer)

  def forward(self, x_cat, x_num):
    x = torch.cat([e(x_cat[:, j]) for j, e in enumerate(self.embeds)] + [x_num], -1)
    for layer in self.layers[:-1]:
      x = torch.relu(layer(x))
    return self.layers[-1](x)


class Head(torch.nn.Module if torch else object):
  """The default device head (one ReLU layer, one logit) on [h, p]."""

  def __init__(self, params):
    super().__init__()
    p = params["params"]
    self.hidden = torch.nn.Linear(*np.asarray(p["hidden_0"]["kernel"]).shape)
    self.out = torch.nn.Linear(np.asarray(p["logits"]["kernel"]).shape[0], 1)
    for layer, name in ((self.hidden, "hidden_0"), (self.out, "logits")):
      layer.weight.data.copy_(_cpu(np.asarray(p[name]["kernel"]).T))
      layer.bias.data.copy_(_cpu(p[name]["bias"]))

  def forward(self, h, p):
    return self.out(torch.relu(self.hidden(torch.cat([h, p], -1))))[:, 0]


def _arrays(split, vocab):
  p = [F.one_hot(_t(split.x_p_cat[:, j], torch.long), v).float()
       for j, v in enumerate(vocab)]
  return dict(x_cat=_t(split.x_s_cat, torch.long), x_num=_t(split.x_s_num),
              p=torch.cat(p + [_t(split.x_p_num)], -1), y=_t(split.y).float())


def _auc(logits, y):
  """Rank-based binary AUC (ties broken by order)."""
  ranks = torch.empty_like(logits)
  ranks[logits.argsort()] = torch.arange(1, len(logits) + 1, device=logits.device,
                                         dtype=logits.dtype)
  pos = y.sum()
  neg = len(y) - pos
  return ((ranks * y).sum() - pos * (pos + 1) / 2) / (pos * neg)


def _train_epoch(server, head, data, batch, steps, clip, sigma, seed, lr):
  gen = torch.Generator(device=device()).manual_seed(seed)
  opt_s = torch.optim.Adam(server.parameters(), lr=lr)
  opt_d = torch.optim.Adam(head.parameters(), lr=lr)
  perm = torch.randperm(len(data["y"]), generator=gen, device=device())
  loss = None
  for s in range(steps):
    idx = perm[s * batch:(s + 1) * batch]
    h = server(data["x_cat"][idx], data["x_num"][idx])
    h_dev = h.detach().requires_grad_()
    losses = F.binary_cross_entropy_with_logits(head(h_dev, data["p"][idx]),
                                                data["y"][idx], reduction="none")
    opt_d.zero_grad()
    losses.sum().backward()        # h_dev.grad: the per-record messages
    for q in head.parameters():
      q.grad /= batch              # the device's gradient of its mean loss
    msgs = h_dev.grad
    scale = torch.clamp(clip / msgs.norm(dim=-1, keepdim=True).clamp_min(1e-12), max=1.0)
    noise = torch.randn(msgs.shape, generator=gen, device=device())
    sent = msgs * scale + sigma * clip * noise
    opt_s.zero_grad()
    h.backward(sent / batch)
    opt_s.step()
    opt_d.step()
    loss = losses.mean()
  return loss


def w2(server_params, device_params, train, vocab, batch: int, steps: int,
       clip: float, sigma: float, repeats: int, lr: float = 1e-3) -> float:
  """Seconds of one epoch of SL with clip + noise (fresh optimisers)."""
  data = _arrays(train, vocab)
  server = Server(server_params).to(device())
  head = Head(device_params).to(device())
  return timed(lambda: _train_epoch(server, head, data, batch, steps, clip, sigma, 0,
                                    lr).detach(), repeats)[0]


def w3(server_params, device_params, train, test, vocab, batch: int, steps: int,
       clip: float, settings, repeats: int, lr: float = 1e-3):
  """(seconds, test AUCs) of `settings` = [(sigma, seed)] one after another,
  each from the same initial params: one epoch, then the test AUC."""
  data, test_data = _arrays(train, vocab), _arrays(test, vocab)

  def run():
    aucs = []
    for sigma, seed in settings:
      server = Server(server_params).to(device())
      head = Head(device_params).to(device())
      _train_epoch(server, head, data, batch, steps, clip, sigma, seed, lr)
      with torch.no_grad():
        logits = head(server(test_data["x_cat"], test_data["x_num"]), test_data["p"])
        aucs.append(_auc(logits, test_data["y"]))
    return torch.stack(aucs)

  seconds, aucs = timed(run, repeats)
  return seconds, aucs.cpu().numpy()


# --- W4 optimiser ----------------------------------------------------------


def w4(view, records: int, vocab, lo, hi, num_restarts: int, num_steps: int,
       learning_rate: float, beta_start: float, beta_end: float, repeats: int,
       seed: int = 0):
  """Gradient matching on the first `records` releases of `view` ([steps, B]).
  Returns (seconds, best exact loss [records], recovered numerics
  [records, numerics] in normalised units), from the best restart."""
  steps, batch = view.ids.shape
  step_of = np.repeat(np.arange(steps), batch)[:records]
  flat = lambda a: np.asarray(a).reshape((steps * batch,) + np.asarray(a).shape[2:])[:records]
  p = view.device_params["params"]
  # Each record's head params: those of its step (SL: one set per step).
  w1_, b1, w2, b2 = _head_tensors(
      {"params": {k: {n: np.asarray(a)[step_of, 0] for n, a in v.items()}
                  for k, v in p.items()}})
  h, m = _t(flat(view.h)), _t(flat(view.messages))
  lo, hi = _t(lo), _t(hi)
  n, r, d = records, num_restarts, h.shape[-1]
  ratio = beta_end / beta_start

  def messages(z, u, beta):
    """[n, r, 2, d] messages of both labels (beta None: the exact ReLU)."""
    parts = [F.softmax(zj, -1) for zj in z] if beta is not None else [
        F.one_hot(zj.argmax(-1), zj.shape[-1]).float() for zj in z]
    x_p = torch.cat(parts + [lo + (hi - lo) * torch.sigmoid(u)], -1)
    h_rep = h[:, None].expand(n, r, d).detach().requires_grad_()
    pre = torch.einsum("nrk,nkh->nrh", torch.cat([h_rep, x_p], -1), w1_) + b1[:, None]
    act = torch.relu(pre) if beta is None else F.softplus(pre, beta=beta)
    logit = torch.einsum("nrh,nh->nr", act, w2) + b2[:, None]
    (dlogit_dh,) = torch.autograd.grad(logit.sum(), h_rep, create_graph=beta is not None)
    sig = torch.sigmoid(logit)[..., None, None]
    coef = torch.cat([sig, sig - 1.0], -2)                 # dl/dlogit, labels 0 and 1
    return coef * dlogit_dh[:, :, None]

  def run():
    gen = torch.Generator(device=device()).manual_seed(seed)
    z = [(0.1 * torch.randn(n, r, v, generator=gen, device=device())).requires_grad_()
         for v in vocab]
    # Restarts on a Latin-hypercube spread of the numeric box, as splitjax does.
    dims = lo.shape[0]
    q = (torch.stack([torch.randperm(r, generator=gen, device=device())
                      for _ in range(dims)], -1)[None].float()
         + torch.rand(n, r, dims, generator=gen, device=device()) * 0.9 + 0.05) / r
    u = torch.logit(q).requires_grad_()
    opt = torch.optim.Adam(z + [u], lr=learning_rate)
    for t in range(num_steps):
      beta = beta_start * ratio ** (t / max(num_steps - 1, 1))
      dist = ((messages(z, u, beta) - m[:, None, None]) ** 2).sum(-1)  # [n, r, 2]
      opt.zero_grad()
      dist.min(-1).values.sum().backward()
      opt.step()
    exact = ((messages(z, u, None) - m[:, None, None]) ** 2).sum(-1).min(-1).values
    best = exact.argmin(-1)
    x = (lo + (hi - lo) * torch.sigmoid(u))[torch.arange(n, device=device()), best]
    return exact.min(-1).values.detach(), x.detach()

  seconds, (loss, x) = timed(run, repeats)
  return seconds, loss.cpu().numpy(), x.cpu().numpy()
