"""The MLP probe: one hidden layer of 256 ReLU units, plain torch (autograd and one Adam), with
every fit of a probe run (all the folds of cross-validation) trained at once as fold-stacked
weights through torch.baddbmm: each fold's loss is its own mean and Adam works per element, so this
is exactly F independent fits, and each optimiser step's overhead is paid once for all of them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The MLP probe's budget, the same for every feature set and never tuned on held-out data: PROBE_EPOCHS
# passes over the largest training fold, so the work grows with the samples, and at least
# PROBE_MIN_STEPS optimiser steps, so a small set (a few hundred samples, one or two batches an
# epoch) still converges.
PROBE_EPOCHS = 30
PROBE_MIN_STEPS = 200
MLP_HIDDEN, MLP_BATCH, MLP_LR, MLP_WEIGHT_DECAY = 256, 256, 1e-3, 1e-4


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each feature by the training fold's mean and std (constant features stay constant)."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


def init_mlps(folds: int, d: int, num_classes: int, generator: torch.Generator, device="cpu") -> list[torch.Tensor]:
    """One MLP per fold, stacked: [w1 (F, d, h), b1 (F, 1, h), w2 (F, h, classes), b2 (F, 1, classes)],
    each drawn as torch.nn.Linear draws it (uniform in +-1/sqrt(fan_in)), from `generator` rather
    than the global one, which fits on other threads share."""
    params = []
    for n_in, n_out in ((d, MLP_HIDDEN), (MLP_HIDDEN, num_classes)):
        bound = 1 / math.sqrt(n_in)
        params += [torch.empty(folds, *shape).uniform_(-bound, bound, generator=generator).to(device)
                   for shape in ((n_in, n_out), (1, n_out))]
    return params


def mlp_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(F, B, d) -> (F, B, classes): each fold's batch through its own MLP."""
    w1, b1, w2, b2 = params
    return torch.baddbmm(b2, torch.baddbmm(b1, x, w1).relu(), w2)


def probe_steps(train_size: int) -> tuple[int, int]:
    """(optimiser steps, batch size) of a fit on `train_size` rows: PROBE_EPOCHS epochs of batches of
    MLP_BATCH (the whole fold where it is smaller), and at least PROBE_MIN_STEPS steps."""
    batch = min(MLP_BATCH, train_size)
    return max(PROBE_MIN_STEPS, PROBE_EPOCHS * math.ceil(train_size / batch)), batch


def mlp_batches(train_sizes: list[int], generator: torch.Generator) -> torch.Tensor:
    """(F, steps, batch) positions into each fold's training rows. Each fold streams its own seeded
    permutations, epoch after epoch, cut into full batches, so folds of different sizes take the
    same number of steps of the same size; the budget (probe_steps) is that of the largest fold."""
    steps, batch = probe_steps(max(train_sizes))
    out = []
    for n in train_sizes:
        stream = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(steps * batch / n))])
        out.append(stream[:steps * batch].view(steps, batch))
    return torch.stack(out)


def train_mlps(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, batches: torch.Tensor) -> None:
    """Train the fold-stacked MLPs in place: x (F, n, d) and y (F, n) each fold's training rows,
    batches (F, steps, B) from mlp_batches. The loss is the sum over folds of each fold's mean
    cross-entropy and Adam works per element, so this is F independent fits in one."""
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY, fused=x.device.type in ("cpu", "cuda"))
    folds = torch.arange(len(x), device=x.device)[:, None]
    for step in range(batches.shape[1]):
        idx = batches[:, step]  # (F, B)
        logits = mlp_forward(params, x[folds, idx])
        loss = F.cross_entropy(logits.flatten(0, 1), y[folds, idx].flatten()) * len(x)  # equal batches: sum of fold means
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)


def mlp_predict(fits: list, num_classes: int, seed: int) -> list[torch.Tensor]:
    """fits [(train features, train labels, test features)]: one MLP per fit, on features standardised
    on its training rows, all trained at once (init_mlps, train_mlps); each test row's softmax over the classes."""
    scaled = [standardise(tr_x, te_x) for tr_x, _, te_x in fits]
    x0 = fits[0][0]
    n_max = max(len(tr_y) for _, tr_y, _ in fits)
    train_x = torch.zeros(len(fits), n_max, x0.shape[1], device=x0.device)  # padded rows are never drawn
    train_y = torch.zeros(len(fits), n_max, dtype=torch.int64, device=x0.device)
    for f, ((_, tr_y, _), (s_tr, _)) in enumerate(zip(fits, scaled)):
        train_x[f, :len(tr_y)], train_y[f, :len(tr_y)] = s_tr, tr_y
    g = torch.Generator().manual_seed(seed)
    params = init_mlps(len(fits), x0.shape[1], num_classes, g, x0.device)
    train_mlps(params, train_x, train_y, mlp_batches([len(tr_y) for _, tr_y, _ in fits], g).to(x0.device))
    return [mlp_forward([p[f:f + 1] for p in params], s_te[None])[0].softmax(1) for f, (_, s_te) in enumerate(scaled)]
