"""Metrics: reconstruction errors (MSE, PSNR, SSIM) and the PCA baseline at the same latent size,
batched encoding, classifier probes on features, and the scores of clusters and projections.

All errors are in [0, 1] pixel units: MSE is the mean over every pixel value of the set, and
PSNR = 10 log10(1 / MSE) of that set-wide MSE (peak value 1). SSIM is the mean over images of
each image's SSIM.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentlab import artifacts
from latentlab.cli import UserError


def psnr(mse: float) -> float:
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the model's input normalisation)."""
    return x_u8.float().div_(255.0)


def fit_pca(train_x: torch.Tensor, k: int, exact_max_dim: int = 4096, max_samples: int = 20000, seed: int = 0):
    """PCA of uint8 images (N, C, H, W) -> (mean (D,), components (k', D)), k' = min(k, D, N).

    Exact (eigendecomposition of the covariance, float64) up to exact_max_dim pixel values;
    above that, randomized SVD (Halko et al. 2011) on at most max_samples images.
    """
    n, d = train_x.shape[0], train_x[0].numel()
    k = min(k, d, n)
    if d <= exact_max_dim:
        mean = torch.zeros(d, dtype=torch.float64)
        cov = torch.zeros(d, d, dtype=torch.float64)
        for part in train_x.split(8192):
            xf = to_float(part.reshape(len(part), -1)).double()
            mean += xf.sum(0)
            cov += xf.T @ xf
        mean /= n
        cov = cov / n - torch.outer(mean, mean)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        comps = evecs[:, -k:].flip(1).T.float()  # (k, D), largest variance first
        return mean.float(), comps.contiguous()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:max_samples]
    xf = to_float(train_x[idx].reshape(len(idx), -1))
    mean = xf.mean(0)
    torch.manual_seed(seed)
    _, _, v = torch.svd_lowrank(xf - mean, q=min(k + 10, *xf.shape), niter=4)
    return mean, v[:, :k].T.contiguous()


def pca_encode(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, k) PCA coordinates."""
    return (to_float(x_u8.reshape(len(x_u8), -1)) - mean) @ comps[:k].T


def pca_reconstruct_batches(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int, batch: int = 8192):
    """Yield (originals, reconstructions from the first k principal components) float batches of
    shape (B, C, H, W), in order. The reconstructions are not clipped to [0, 1]."""
    c = comps[:k]
    for part in x_u8.split(batch):
        xf = to_float(part.reshape(len(part), -1))  # (B, D)
        rec = (xf - mean) @ c.T @ c + mean
        yield xf.view(part.shape), rec.view(part.shape)


def pca_mse(x_u8: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor, k: int, batch: int = 8192) -> float:
    """MSE of reconstructing x from its first k principal components (no clipping)."""
    total, count = 0.0, 0
    for xf, rec in pca_reconstruct_batches(x_u8, mean, comps, k, batch):
        total += (rec - xf).pow(2).sum().item()
        count += xf.numel()
    return total / count


@torch.no_grad()
def reconstruct_batches(model, x_u8: torch.Tensor, device, batch: int = 512):
    """Yield (originals, reconstructions) float batches in [0, 1], on the CPU, in order."""
    model.eval()
    for part in x_u8.split(batch):
        x = to_float(part.to(device, non_blocking=True))
        yield x.cpu(), model.reconstruct(x).float().cpu()


def model_mse(model, x_u8: torch.Tensor, device, batch: int = 512) -> float:
    total, count = 0.0, 0
    for x, rec in reconstruct_batches(model, x_u8, device, batch):
        total += (rec - x).pow(2).sum().item()
        count += x.numel()
    return total / count


def sample_test_items(total: int, num_samples, seed: int) -> tuple[torch.Tensor, str]:
    """The test items a step encodes: a seeded random sample of num_samples (the first num_samples
    of the seed's permutation of the test set, kept in test-set order), or every item ("all", or
    more than there are). Returns (indices (n,) int64, how they were chosen, in words)."""
    n = total if num_samples == "all" else min(num_samples, total)
    if n < total:
        indices = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return indices, f"a random sample of {n} of the {total} test images (permutation seeded with {seed}), in test-set order"
    return torch.arange(total), f"all {total} test images, in test-set order"


@torch.no_grad()
def encode_images(model, x_u8: torch.Tensor, device, batch: int = 512, progress=None) -> np.ndarray:
    """(N, C, H, W) uint8 -> float32 latents (N, latent_size), one batch at a time (a VAE gives its
    posterior mean). progress: an optional callable n -> None, told how many images each batch held."""
    model.eval()
    out = np.empty((len(x_u8), model.config.latent_size), dtype=np.float32)
    start = 0
    for part in x_u8.split(batch):
        z = model.encode(to_float(part.to(device, non_blocking=True)))
        out[start:start + len(part)] = z.float().cpu().numpy()
        start += len(part)
        if progress:
            progress(len(part))
    return out


# ---------------------------------------------------------------- SSIM and reconstruction scores
def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 7,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """SSIM of each image pair (Wang et al. 2004): (B, C, H, W) x2 -> (B,) float64.

    Computes what skimage.metrics.structural_similarity computes with its defaults (a 7x7 uniform
    window, sample covariance, the mean over every window position that fits inside the image, the
    mean over channels), for a whole batch at once. Images smaller than 7 pixels use the largest odd
    window that fits (at least 3).
    """
    win = min(win_size, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    mean = lambda t: _box_mean(t, win)  # noqa: E731
    ux, uy = mean(x), mean(y)
    n = win * win
    cov = n / (n - 1)  # sample covariance, as skimage's default
    vx = cov * (mean(x * x) - ux * ux)
    vy = cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def _box_mean(t: torch.Tensor, win: int) -> torch.Tensor:
    """The mean of every win x win window that fits inside the image (B, C, H, W) ->
    (B, C, H - win + 1, W - win + 1): F.avg_pool2d(t, win, stride=1), from running sums along each
    axis (3x faster on a CPU, float64 keeps the differences exact to ~1e-15)."""
    for dim in (-1, -2):
        c = t.cumsum(dim)
        t = torch.cat([c.narrow(dim, win - 1, 1), c.narrow(dim, win, c.shape[dim] - win) - c.narrow(dim, 0, c.shape[dim] - win)], dim)
    return t / (win * win)


def reconstruction_scores(batches) -> dict:
    """batches: (originals, reconstructions) float pairs (B, C, H, W), e.g. from reconstruct_batches
    or pca_reconstruct_batches. Returns the set-wide MSE, its PSNR, and the mean per-image SSIM."""
    sq, count, ssim_sum, images = 0.0, 0, 0.0, 0
    for x, rec in batches:
        sq += (rec - x).pow(2).sum().item()
        count += x.numel()
        ssim_sum += ssim(x, rec).sum().item()
        images += len(x)
    mse = sq / count
    return {"mse": mse, "psnr": psnr(mse), "ssim": ssim_sum / images}


# ---------------------------------------------------------------- classifier probes
PROBES = ("linear", "knn", "mlp")
KNN_K = 10
# The MLP probe's fixed budget, the same for every feature set and never tuned on held-out data:
# PROBE_EPOCHS passes over the training folds, and at least PROBE_MIN_STEPS optimiser steps, so a
# small set (the demo classifies 359 test digits: 287 per training fold, 2 batches an epoch) is
# not left underfit.
PROBE_EPOCHS = 30
PROBE_MIN_STEPS = 1000
PROBE_VERSION = 4  # bump when a probe's training changes: cached predictions of older probes are not reused


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each feature by the training fold's mean and std (constant features stay constant)."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


def _fit_linear(x, y, test, num_classes: int, seed: int, k: int, c: float = 1.0, max_iter: int = 100,
                chunk: int = 2048):
    """Multinomial logistic regression, L2 penalty as scikit-learn's default (C = 1, on the
    weights, not the bias), full-batch L-BFGS (torch's, strong Wolfe line search) up to max_iter
    iterations. The loss and gradient are written out (torch's autograd on X @ W with 10 outputs
    ran 3x slower on a 2-core CPU) and computed `chunk` rows at a time, so each evaluation reads
    the features from memory once: 1.5x faster on 784-d pixels, which do not fit in the cache."""
    n, d = x.shape
    w = torch.zeros(num_classes, d, device=x.device)
    b = torch.zeros(num_classes, device=x.device)
    lam = 1.0 / (c * n)
    # stops where scikit-learn's lbfgs stops by default: gradient entries below 1e-4 (tol), or max_iter
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-4,
                            line_search_fn="strong_wolfe")

    all_rows = torch.arange(min(chunk, n), device=x.device)

    def closure():
        with torch.no_grad():
            w.grad, b.grad = torch.mul(w, lam), torch.zeros_like(b)
            nll = torch.zeros((), device=x.device)
            for start in range(0, n, chunk):
                xc, yc = x[start:start + chunk], y[start:start + chunk]
                rows = all_rows[:len(xc)]
                logp = torch.addmm(b, xc, w.t()).log_softmax(1)
                nll -= logp[rows, yc].sum()
                p = logp.exp_()  # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / n
                p[rows, yc] -= 1
                p /= n
                w.grad.addmm_(p.t(), xc)
                b.grad.add_(p.sum(0))
        return nll / n + 0.5 * lam * (w * w).sum()

    opt.step(closure)
    return torch.addmm(b, test, w.t()).argmax(1)


def _train_mlp(x, y, num_classes: int, seed: int, hidden: int = 256, batch: int = 256, lr: float = 1e-3,
               weight_decay: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8):
    """Train one hidden layer of `hidden` ReLU units on (x, y): cross-entropy, mini-batches of
    `batch` in a seeded order, Adam (lr 1e-3, weight decay 1e-4 added to the gradient) for the
    fixed budget above. Returns (w1 (hidden, d), b1, w2 (classes, hidden), b2).

    It computes what torch.nn.Linear + F.cross_entropy + torch.optim.Adam compute (the same
    initialisation, batches, gradients and update; tested against them), with the gradients and the
    update written out in place into preallocated buffers, all parameters in one flat tensor: on a
    2-core CPU autograd and the optimiser's per-step overhead made a fit 1.3x (784 inputs) to 4x
    (2 inputs) slower."""
    n, d = x.shape
    dev = x.device
    epochs = max(PROBE_EPOCHS, math.ceil(PROBE_MIN_STEPS / math.ceil(n / batch)))
    # torch.nn.Linear's initialisation (weight, then bias, uniform in +-1/sqrt(fan_in)), drawn on
    # the CPU from the fit's own generator: fits run side by side, the global one is shared
    init = torch.Generator().manual_seed(seed)
    theta = torch.cat([torch.empty(n_out * n_in + n_out).uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in), generator=init)
                       for n_in, n_out in ((d, hidden), (hidden, num_classes))]).to(dev)
    grad, m, v, denom = (torch.zeros_like(theta) for _ in range(4))
    sizes = [hidden * d, hidden, num_classes * hidden, num_classes]

    def unflatten(flat):
        a, b, c, e = flat.split(sizes)
        return a.view(hidden, d), b, c.view(num_classes, hidden), e

    w1, b1, w2, b2 = unflatten(theta)
    g_w1, g_b1, g_w2, g_b2 = unflatten(grad)
    xs, hs, ps, dhs, masks = (torch.empty(batch, width, device=dev) for width in (d, hidden, num_classes, hidden, hidden))
    rows = torch.arange(batch, device=dev)
    beta1, beta2 = betas
    order = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=order).to(dev).split(batch):
            k = len(idx)
            xb, h, p, dh, mask = xs[:k], hs[:k], ps[:k], dhs[:k], masks[:k]
            torch.index_select(x, 0, idx, out=xb)
            torch.addmm(b1, xb, w1.t(), out=h).relu_()
            torch.addmm(b2, h, w2.t(), out=p)
            torch.softmax(p, 1, out=p)
            p[rows[:k], y[idx]] -= 1  # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / k
            p /= k
            torch.mm(p.t(), h, out=g_w2)
            torch.sum(p, 0, out=g_b2)
            torch.mm(p, w2, out=dh).mul_(torch.sign(h, out=mask))  # ReLU's gradient: h >= 0, so sign(h) is h > 0
            torch.mm(dh.t(), xb, out=g_w1)
            torch.sum(dh, 0, out=g_b1)
            # Adam, as torch.optim.Adam(lr, betas, eps, weight_decay) does it
            step += 1
            grad.add_(theta, alpha=weight_decay)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            torch.sqrt(v, out=denom).div_(math.sqrt(1 - beta2 ** step)).add_(eps)
            theta.addcdiv_(m, denom, value=-lr / (1 - beta1 ** step))
    return w1, b1, w2, b2


def _fit_mlp(x, y, test, num_classes: int, seed: int, k: int):
    """The MLP probe: _train_mlp on (x, y), then the class of each test row."""
    w1, b1, w2, b2 = _train_mlp(x, y, num_classes, seed)
    return torch.addmm(b2, torch.addmm(b1, test, w1.t()).relu_(), w2.t()).argmax(1)


def _knn_predict(x, y, test, num_classes: int, seed: int, k: int, chunk: int = 2048):
    """Majority vote of the k nearest training points (Euclidean), ties to the smaller class index
    as scikit-learn's KNeighborsClassifier; queries in chunks, so memory stays bounded."""
    out = []
    for q in test.split(chunk):
        nearest = torch.cdist(q, x).topk(k, largest=False).indices
        out.append(F.one_hot(y[nearest], num_classes).sum(1).argmax(1))
    return torch.cat(out)


_PROBES = {"linear": _fit_linear, "knn": _knn_predict, "mlp": _fit_mlp}
_SLOWEST_FIRST = ("mlp", "linear", "knn")  # the order fits start in, so the workers end together


def probe_predict(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                  num_classes: int, seed: int = 0, knn_k: int = KNN_K) -> torch.Tensor:
    """Fit one probe on (train_x, train_y) and predict test_x. linear = multinomial logistic
    regression and mlp = one hidden layer of 256 ReLU units, both on features standardised on the
    training data only; knn = k-nearest neighbours (Euclidean) on the features as they are, so it
    measures the space's own geometry (standardising would blow up PCA's low-variance components).
    Labels are 0..num_classes-1. Runs in torch, on the tensors' device."""
    if name not in _PROBES:
        raise ValueError(f"unknown probe {name!r}; choose from {PROBES}")
    if name != "knn":
        train_x, test_x = _standardise(train_x, test_x)
    return _PROBES[name](train_x, train_y, test_x, num_classes, seed, knn_k)


def check_folds(labels: np.ndarray, folds: int) -> None:
    """Stratified k-fold needs at least `folds` samples in the largest class and two classes."""
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    if len(counts) < 2:
        raise UserError("the samples hold a single class; a classifier needs at least two "
                        "(encode more with --num_samples)")
    if counts.max() < folds:
        raise UserError(f"{folds}-fold cross-validation needs a class with at least {folds} samples, the largest has "
                        f"{counts.max()}; encode more with --num_samples or lower --folds")


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train indices, test indices)] of each fold: the splits of scikit-learn's
    StratifiedKFold(folds, shuffle=True, random_state=seed) (its algorithm, tested equal), here so
    that step 6 need not import scikit-learn. Each class is dealt round-robin over the folds, then
    each class's fold assignment is shuffled by a numpy RandomState(seed)."""
    labels = np.asarray(labels)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    encoded = np.unique(first, return_inverse=True)[1][inverse.reshape(-1)]  # classes in order of first appearance
    allocation = np.asarray([np.bincount(np.sort(encoded)[i::folds], minlength=len(first)) for i in range(folds)])
    rng = np.random.RandomState(seed)
    test_fold = np.empty(len(labels), dtype=np.int64)
    for c in range(len(first)):
        of_class = np.arange(folds).repeat(allocation[:, c])
        rng.shuffle(of_class)
        test_fold[encoded == c] = of_class
    index = np.arange(len(labels))
    return [(index[test_fold != f], index[test_fold == f]) for f in range(folds)]


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """The unweighted mean over classes (those in truth or pred) of each class's F1,
    2 TP / (2 TP + FP + FN): scikit-learn's f1_score(average="macro")."""
    classes = np.union1d(truth, pred)
    tp = np.array([np.sum((truth == c) & (pred == c)) for c in classes])
    support = np.array([np.sum(truth == c) + np.sum(pred == c) for c in classes])  # 2 TP + FP + FN
    return float(np.mean(2 * tp / support))


def probe_scores(features: np.ndarray, labels: np.ndarray, probes=PROBES, folds: int = 5, seed: int = 0,
                 knn_k: int = KNN_K, progress=None, device="cpu", cache_dir=None, workers: int | None = None) -> dict:
    """Score classifiers on features by stratified k-fold cross-validation (seeded shuffle): each
    sample is predicted by a classifier trained on the other folds only, never on itself.

    Returns {probe: {"accuracy", "macro_f1", "fold_accuracy_std", "predictions"}}: accuracy and
    macro-F1 over the pooled out-of-fold predictions, the spread of the per-fold accuracies, and
    the predictions themselves (ndarray, same order as labels). k-NN uses min(knn_k, smallest
    training fold) neighbours. progress: optional callable () -> None after each fit. The probes
    (probe_predict) run in torch on `device`.

    cache_dir: where each probe's out-of-fold predictions are kept, keyed by the content of the
    features and labels, the probe, the folds, the seed, k and the device type, so features
    scored once (the raw pixels and PCA baselines of a test set, above all) are not fit again.

    workers: fits run at once (probe_workers: on a CPU, one per core, each fit on one thread).
    """
    unknown = [name for name in probes if name not in _PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from {PROBES}")
    labels = np.asarray(labels)
    check_folds(labels, folds)
    classes, codes = np.unique(labels, return_inverse=True)
    splits = stratified_folds(labels, folds, seed)
    k = max(1, min(knn_k, min(len(tr) for tr, _ in splits)))
    features = np.ascontiguousarray(features, dtype=np.float32)
    x = torch.as_tensor(features).to(device)
    y = torch.as_tensor(codes).to(device)
    paths, preds = {}, {}
    for name in probes:
        paths[name] = None if cache_dir is None else Path(cache_dir) / f"probe_{name}_{_probe_key(name, features, codes, folds, seed, k, device)}.npy"
        preds[name] = artifacts.load_cached_npy(paths[name], lambda p: p.shape == codes.shape and p.dtype.kind in "iu"
                                                and ((p >= 0) & (p < len(classes))).all())
        if preds[name] is not None and progress:
            for _ in splits:
                progress()
    todo = [name for name in probes if preds[name] is None]
    for name in todo:
        preds[name] = np.empty_like(codes)

    def fit(name, fold):
        train, test = splits[fold]
        return probe_predict(name, x[train], y[train], x[test], len(classes), seed, k).cpu().numpy()

    jobs = sorted(((n, f) for n in todo for f in range(folds)), key=lambda job: _SLOWEST_FIRST.index(job[0]))
    for (name, fold), pred in _run_fits(fit, jobs, probe_workers(device, workers), progress):
        preds[name][splits[fold][1]] = pred
    out = {}
    for name in probes:
        pred = preds[name]
        if name in todo and paths[name] is not None:
            artifacts.save_npy(pred, paths[name])
        fold_acc = [np.mean(codes[test] == pred[test]) for _, test in splits]
        out[name] = {"accuracy": float(np.mean(codes == pred)), "macro_f1": macro_f1(codes, pred),
                     "fold_accuracy_std": float(np.std(fold_acc)), "predictions": classes[pred]}
    if "knn" in out:
        out["knn"]["k"] = k
    return out


def probe_workers(device, workers: int | None = None) -> int:
    """How many probe fits run at once: `workers` if given; on a CPU, torch's intra-op thread count
    (the cores, or what OMP_NUM_THREADS / torch.set_num_threads asked for); on a GPU, one.

    On a CPU each fit runs on one thread, in its own worker thread (see _run_fits). The probes are
    small: a 2-d MLP step is a few dozen tiny kernels, too small to split over cores, and even the
    784-d one's 256 x 784 products gain little from a second thread. Fits side by side keep every
    core busy (on a 2-core CPU step 6 ran 1.28x faster). And a fit's float sums no longer depend on
    how many cores the machine has: any CPU gets the same predictions."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return workers
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


def _run_fits(fit, jobs: list, workers: int, progress=None):
    """Yield (job, fit(*job)) for each job, with `workers` fits at once in threads (torch's kernels
    release the GIL). On the CPU every fit runs on one intra-op thread, whatever `workers` is, and
    torch's thread count is restored after."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    try:
        futures = {pool.submit(fit, *job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
            if progress:
                progress()
    finally:  # on an error or Ctrl-C, the fits not yet started are dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _probe_key(name: str, features: np.ndarray, codes: np.ndarray, folds: int, seed: int, k: int, device) -> str:
    return artifacts.content_key({"probe": name, "version": PROBE_VERSION, "shape": list(features.shape), "folds": folds,
                                  "seed": seed, "k": k, "epochs": [PROBE_EPOCHS, PROBE_MIN_STEPS],
                                  "device": torch.device(device).type, "torch": torch.__version__.split("+")[0]},
                                 features, codes.astype(np.int64))


def linear_probe_accuracy(features, labels, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of logistic regression on the features (see probe_scores)."""
    return probe_scores(features, labels, ("linear",), folds, seed)["linear"]["accuracy"]


def knn_accuracy(features, labels, k: int = KNN_K, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of k-nearest neighbours on the features (see probe_scores)."""
    return probe_scores(features, labels, ("knn",), folds, seed, knn_k=k)["knn"]["accuracy"]


def one_blas_thread():
    """A context in which numpy/scipy's BLAS runs one thread. With torch loaded, its OpenMP
    threads and OpenBLAS's threads contend for the cores: measured on a 2-core CPU, a logistic
    regression on 8,000 x 256 latents took 47 s with 2 BLAS threads and 2.0 s with one, an MLP
    probe 68 s and 9.9 s (scikit-learn's, which the probes used before they moved to torch).
    k-means runs in it."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


# ---------------------------------------------------------------- clusters and projections
SILHOUETTE_MAX_SAMPLES = 5000  # silhouette and trustworthiness are O(n^2): score a seeded subsample above this


def cluster_purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of samples whose class is the majority class of their cluster."""
    hits = sum(np.bincount(np.unique(labels[clusters == c], return_inverse=True)[1]).max()
               for c in np.unique(clusters))
    return float(hits / len(labels))


def kmeans_scores(features: np.ndarray, labels: np.ndarray, num_clusters: int, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """k-means (k-means++, 10 restarts, seeded) on the features, scored against the classes.

    Returns (scores, cluster of each sample (n,), centroids (k, d)). Scores: NMI and ARI against the
    labels, cluster purity, and the silhouette of the clusters in the space they were found in
    (on a seeded subsample of SILHOUETTE_MAX_SAMPLES; None when fewer than 2 or more than n - 1
    distinct clusters came out, where it is undefined).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if not 2 <= num_clusters <= len(features):
        raise UserError(f"k-means with {num_clusters} clusters needs at least that many samples and 2 clusters, "
                        f"there are {len(features)} samples; choose --num_clusters in 2..{len(features)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer distinct clusters than k" on duplicate points: counted below
        with one_blas_thread():
            km = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(features)
    clusters = km.labels_
    distinct = len(np.unique(clusters))
    sil = None
    if 2 <= distinct <= len(features) - 1:
        sil = float(silhouette_score(features, clusters, sample_size=min(len(features), SILHOUETTE_MAX_SAMPLES),
                                     random_state=seed))
    scores = {"nmi": float(normalized_mutual_info_score(labels, clusters)),
              "ari": float(adjusted_rand_score(labels, clusters)),
              "purity": cluster_purity(labels, clusters), "silhouette": sil,
              "num_clusters": int(num_clusters), "distinct_clusters": distinct}
    return scores, clusters, km.cluster_centers_


def trustworthiness(high: np.ndarray, low: np.ndarray, n_neighbors: int = 5, seed: int = 0, chunk: int = 1024) -> float:
    """Trustworthiness of a projection (Venna & Kaski; scikit-learn's sklearn.manifold.trustworthiness,
    tested equal), on a seeded subsample of SILHOUETTE_MAX_SAMPLES points: 1 when the k nearest
    neighbours of every point in the projection are among its k nearest in the full space;
    neighbours from further away cost by how far down the full space's order they come:
    1 - 2 / (n k (2n - 3k - 1)) * sum over i, j in N_k^low(i) of max(0, rank of j from i in high - k).

    In torch, `chunk` rows at a time in float64: a rank is the count of points nearer than j,
    so no row of the n x n distances is sorted (at 5,000 points: 1.4 s against scikit-learn's
    2.3 s, most of which its argsort of every row)."""
    n = len(high)
    if n > SILHOUETTE_MAX_SAMPLES:
        keep = np.random.default_rng(seed).choice(n, SILHOUETTE_MAX_SAMPLES, replace=False)
        high, low, n = high[keep], low[keep], SILHOUETTE_MAX_SAMPLES
    k = min(n_neighbors, (n - 1) // 2)  # as scikit-learn, which requires n_neighbors < n / 2
    if k < 1:
        raise UserError(f"trustworthiness needs at least 3 samples, there are {n}; encode more with --num_samples")
    high = torch.as_tensor(np.asarray(high, dtype=np.float64).reshape(n, -1))
    low = torch.as_tensor(np.asarray(low, dtype=np.float64).reshape(n, -1))
    penalty = 0
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        d_high, d_low = torch.cdist(high[rows], high), torch.cdist(low[rows], low)
        d_high[rows - start, rows] = d_low[rows - start, rows] = torch.inf  # a point is not its own neighbour
        near_low = d_low.topk(k, largest=False).indices  # (rows, k)
        ranks = (d_high.unsqueeze(1) < d_high.gather(1, near_low).unsqueeze(2)).sum(2) + 1  # 1 = nearest in high
        penalty += int((ranks - k).clamp_(min=0).sum())
    return float(1 - penalty * 2.0 / (n * k * (2.0 * n - 3 * k - 1)))


def kmeans_nmi(z: np.ndarray, labels: np.ndarray, num_clusters: int, space: str = "latent", umap_dims: int = 2,
               seed: int = 0, cache_dir=None) -> float:
    """NMI against the labels of k-means on the latents (space "latent") or on their UMAP reduction
    (space "umap"), as viz_kmeans_latent_space.py --space computes it."""
    from latentlab.projection import clustering_space
    return kmeans_scores(clustering_space(z, space, umap_dims, seed, cache_dir)[0], labels, num_clusters, seed)[0]["nmi"]
