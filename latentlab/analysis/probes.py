"""Classifier probes on features, scored two ways: by stratified k-fold cross-validation inside one
set (probe_scores_of_sets: each sample is predicted by a classifier fit on the other folds only), or
held out (heldout_scores_of_sets: fit once on training features, scored once on test features).

linear = scikit-learn's logistic regression and mlp = one hidden layer of 256 ReLU units (torch,
every fold's MLP trained at once), both on features standardised on each training fold; knn =
k-nearest neighbours (Euclidean, torch) on the features as they are, so it measures the space's own
geometry (standardising would blow up PCA's low-variance components). The torch probes run on the
given device.
"""
from __future__ import annotations

import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentlab.analysis import mlp_probe
from latentlab.store import files
from latentlab.analysis.mlp_probe import mlp_predict, standardise

PROBES = ("linear", "knn", "mlp")
KNN_K = 10
# wider features (the raw pixels of larger images) are reduced by PCA on the training rows first,
# as a probe's cost grows with the width
MAX_PROBE_FEATURES = 1024
PROBE_VERSION = 6  # bump when a probe's training changes: cached predictions of older probes are not reused


def check_folds(labels: np.ndarray, folds: int) -> None:
    """Stratified k-fold needs at least `folds` samples in the largest class and two classes."""
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    if len(counts) < 2:
        raise ValueError("the samples hold a single class; a classifier needs at least two")
    if counts.max() < folds:
        raise ValueError(f"{folds}-fold cross-validation needs a class with at least {folds} samples, the largest has "
                         f"{counts.max()}")


def linear_predict(x: np.ndarray, y: np.ndarray, test: np.ndarray, c: float = 1.0) -> np.ndarray:
    """scikit-learn's LogisticRegression (multinomial, L2 with C = 1, lbfgs) fit on (x, y),
    the class of each test row."""
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=c).fit(x, y).predict(test)


def knn_predict(x, y, test, num_classes: int, k: int, chunk: int = 2048) -> torch.Tensor:
    """Majority vote of the k nearest training points (Euclidean), ties to the smaller class index
    as scikit-learn's KNeighborsClassifier; queries in chunks, so memory stays bounded."""
    out = []
    for q in test.split(chunk):
        nearest = torch.cdist(q, x).topk(k, largest=False).indices
        out.append(F.one_hot(y[nearest], num_classes).sum(1).argmax(1))
    return torch.cat(out)


def _out_of_fold(name: str, x: torch.Tensor, y: torch.Tensor, splits, num_classes: int, seed: int, k: int) -> np.ndarray:
    """Each sample's class predicted by the probe fit on the other folds: (n,) int64."""
    pred = torch.empty(len(y), dtype=torch.int64, device=x.device)
    folds = [(torch.as_tensor(tr, device=x.device), torch.as_tensor(te, device=x.device)) for tr, te in splits]
    width = probe_width(x.shape[1], min(len(tr) for tr, _ in splits))  # the same in every fold: the MLPs are stacked
    fits = [(*reduce_wide(x[tr], x[te], width, seed), y[tr], te) for tr, te in folds]
    if name == "knn":
        for train_x, test_x, train_y, te in fits:
            pred[te] = knn_predict(train_x, train_y, test_x, num_classes, k)
    elif name == "linear":  # on the CPU, in numpy
        for train_x, test_x, train_y, te in fits:
            train_x, test_x = standardise(train_x, test_x)
            pred[te] = torch.as_tensor(linear_predict(train_x.cpu().numpy(), train_y.cpu().numpy(), test_x.cpu().numpy()))
    else:
        for (*_, te), p in zip(fits, mlp_predict([(tr_x, tr_y, te_x) for tr_x, te_x, tr_y, _ in fits], num_classes, seed)):
            pred[te] = p
    return pred.cpu().numpy()


def probe_width(d: int, train_size: int) -> int:
    """The width the probes see of d features fit on train_size rows: d, or where d is over
    MAX_PROBE_FEATURES, that many principal components, and no more than the centred rows span (a
    component beyond them has no variance, which standardising would blow up)."""
    return d if d <= MAX_PROBE_FEATURES else max(1, min(MAX_PROBE_FEATURES, train_size - 1))


def reduce_wide(train_x: torch.Tensor, test_x: torch.Tensor, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) features as they are, or projected on the first `width` principal components
    of the training rows (scikit-learn's PCA, whose solver is randomized for wide data)."""
    if width == train_x.shape[1]:
        return train_x, test_x
    from sklearn.decomposition import PCA
    pca = PCA(width, random_state=seed).fit(train_x.cpu().numpy())
    return tuple(torch.as_tensor(pca.transform(a.cpu().numpy()), dtype=torch.float32, device=a.device)
                 for a in (train_x, test_x))


def best_probe(scores: dict) -> str:
    """The probe of highest accuracy in scores {probe: {"accuracy", ...}} (other entries skipped).
    Applied to the N-d model's latents, it picks the one probe that step 6's confusion figure and the
    explorer show for every model, so that their panels compare like with like."""
    scored = {p: s for p, s in scores.items() if isinstance(s, dict) and "accuracy" in s}
    return max(scored, key=lambda p: scored[p]["accuracy"])


def probe_scores(features: np.ndarray, labels: np.ndarray, probes=PROBES, folds: int = 5, seed: int = 0,
                 knn_k: int = KNN_K, progress=None, device="cpu", cache_dir=None, workers: int | None = None) -> dict:
    """probe_scores_of_sets for one feature set."""
    return probe_scores_of_sets({0: (features, labels)}, probes, folds, seed, knn_k, progress, device, cache_dir, workers)[0]


def probe_scores_of_sets(sets: dict, probes=PROBES, folds: int = 5, seed: int = 0, knn_k: int = KNN_K, progress=None,
                         device="cpu", cache_dir=None, workers: int | None = None) -> dict:
    """Score classifiers on each feature set by stratified k-fold cross-validation:
    sets {key: (features (n, d), labels (n,))} -> {key: {probe: {"accuracy", "macro_f1",
    "fold_accuracy_std", "predictions", "probed_dims"}}}, the scores over the pooled out-of-fold
    predictions, the spread of the per-fold accuracies, the predictions themselves (same order as
    labels) and the width the probes saw (probe_width: wide features are reduced by PCA). The
    folds are StratifiedKFold(folds, shuffle=True, random_state=seed). k-NN uses min(knn_k,
    smallest training fold) neighbours. progress: optional callable () -> None after each fold's fit.

    cache_dir: where each probe's out-of-fold predictions are kept, keyed by the content of the
    features and labels, the probe, the folds, the seed, k and the device type, so features
    scored once (the raw pixels and PCA baselines of a test set, above all) are not fit again;
    sets of the same content are fit once.

    workers: fits (one probe on one set, all folds) run at once, each on one thread (default: on a
    CPU one per core, as the probes are too small to split over cores; on a GPU one).
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    unknown = [name for name in probes if name not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from {PROBES}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    plans, jobs = {}, {}
    for key, (features, labels) in sets.items():
        labels = np.asarray(labels)
        check_folds(labels, folds)
        classes, codes = np.unique(labels, return_inverse=True)
        codes = codes.reshape(-1)
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(codes)), codes))
        k = max(1, min(knn_k, min(len(tr) for tr, _ in splits)))
        features = np.ascontiguousarray(features, dtype=np.float32)
        plans[key] = (classes, codes, splits, k, {})
        for name in probes:
            job = _fit_key(name, device, features, codes.astype(np.int64), shape=list(features.shape), folds=folds,
                           seed=seed, k=k)
            jobs.setdefault(job, (name, features, codes, splits, len(classes), k))
            plans[key][4][name] = job

    def run(job):
        name, features, codes, splits, num_classes, k = jobs[job]
        path = None if cache_dir is None else Path(cache_dir) / f"probe_{name}_{job}.npy"
        pred = files.load_cached_npy(path, lambda p: p.shape == codes.shape and p.dtype.kind in "iu"
                                         and ((p >= 0) & (p < num_classes)).all())
        if pred is None:
            x, y = torch.as_tensor(features).to(device), torch.as_tensor(codes).to(device)
            pred = _out_of_fold(name, x, y, splits, num_classes, seed, k)
            if path is not None:
                files.save_npy(pred, path)
        return pred

    uses = Counter(job for *_, names in plans.values() for job in names.values())  # (set, probe) pairs per fit
    preds = run_fits(jobs, run, device, workers, lambda job: folds * uses[job] if progress else 0, progress)
    out = {}
    for key, (classes, codes, splits, k, names) in plans.items():
        features = sets[key][0]
        out[key] = {}
        for name, job in names.items():
            pred = preds[job]
            fold_acc = [accuracy_score(codes[test], pred[test]) for _, test in splits]
            out[key][name] = {"accuracy": float(accuracy_score(codes, pred)),
                              "macro_f1": float(f1_score(codes, pred, average="macro", zero_division=0)),
                              "fold_accuracy_std": float(np.std(fold_acc)), "predictions": classes[pred],
                              "probed_dims": probe_width(np.shape(features)[1], min(len(tr) for tr, _ in splits))}
        if "knn" in out[key]:
            out[key]["knn"]["k"] = k
    return out


def run_fits(jobs, run, device, workers: int | None, steps_of, progress) -> dict:
    """{job: run(job)} for every job, fits side by side on threads; progress() is called
    steps_of(job) times when a job is done."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits
    if workers is None:
        workers = max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1
    threads = torch.get_num_threads()
    preds = {}
    # fits side by side in threads share the cores (torch's and scikit-learn's kernels release the
    # GIL), each on one thread: every thread pool (torch's, OpenMP's, BLAS's) at one, so none
    # contends with another for the cores; restored after
    with warnings.catch_warnings(), threadpool_limits(limits=1), ThreadPoolExecutor(min(workers, len(jobs)), initializer=_one_thread) as pool:
        # the linear probe's budget is scikit-learn's default max_iter, as in step 6's notes
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            for job, pred in zip(jobs, pool.map(run, jobs)):
                preds[job] = pred
                for _ in range(steps_of(job)):
                    progress()
        finally:  # on an error or Ctrl-C, the fits not yet started are dropped, not waited for
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
    return preds


def _one_thread() -> None:
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # this thread's OpenMP (scikit-learn's own copy) and BLAS


def _fit_key(name: str, device, *arrays: np.ndarray, **fields) -> str:
    """The cache key of one probe's fit: the probe, its version and budget, the device type, torch,
    the protocol's own fields, and the content of the arrays."""
    return files.content_key({"probe": name, "version": PROBE_VERSION, "device": torch.device(device).type,
                              "epochs": [mlp_probe.PROBE_EPOCHS, mlp_probe.PROBE_MIN_STEPS],
                              "max_features": MAX_PROBE_FEATURES,
                              "torch": torch.__version__.split("+")[0], **fields}, *arrays)


# ---------------------------------------------------------------- the held-out protocol
HELDOUT_KNN_KS = (5, 10)  # 5: the k-NN of Sainburg et al. 2021 (Parametric UMAP); 10: the cross-validated probe's


def heldout_scores_of_sets(sets: dict, probes=PROBES, seed: int = 0, knn_ks=HELDOUT_KNN_KS, progress=None,
                           device="cpu", cache_dir=None, workers: int | None = None) -> dict:
    """Score classifiers fit once on training features and scored once on test features, as the
    literature does: sets {key: (train features (n, d), train labels (n,), test features (m, d),
    test labels (m,))} -> {key: {probe: {"accuracy", "macro_f1", "predictions", "probed_dims"}}}; "knn" becomes one
    entry per k of knn_ks ("knn5", "knn10"). Fits of the same content run once; cache_dir and
    workers as in probe_scores_of_sets. progress: optional callable () -> None after each fit."""
    from sklearn.metrics import accuracy_score, f1_score
    unknown = [name for name in probes if name not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from {PROBES}")
    plans, jobs = {}, {}
    for key, (train_x, train_y, test_x, test_y) in sets.items():
        classes, codes = np.unique(np.concatenate([np.asarray(train_y), np.asarray(test_y)]), return_inverse=True)
        codes = codes.reshape(-1)
        train_c, test_c = codes[:len(train_y)], codes[len(train_y):]
        if len(np.unique(train_c)) < 2:
            raise ValueError("the training features hold a single class; a classifier needs at least two")
        train_x = np.ascontiguousarray(train_x, dtype=np.float32)
        test_x = np.ascontiguousarray(test_x, dtype=np.float32)
        plans[key] = (classes, test_c, {})
        for name in probes:
            for k in (knn_ks if name == "knn" else (0,)):
                k = min(k, len(train_c))
                job = _fit_key(name, device, train_x, train_c.astype(np.int64), test_x, protocol="heldout", k=k,
                               seed=seed, shapes=[list(train_x.shape), list(test_x.shape)])
                jobs.setdefault(job, (name, train_x, train_c, test_x, len(classes), k))
                plans[key][2][f"knn{k}" if name == "knn" else name] = job

    def run(job):
        name, train_x, train_c, test_x, num_classes, k = jobs[job]
        path = None if cache_dir is None else Path(cache_dir) / f"heldout_{name}_{job}.npy"
        pred = files.load_cached_npy(path, lambda p: p.shape == (len(test_x),) and p.dtype.kind in "iu"
                                         and ((p >= 0) & (p < num_classes)).all())
        if pred is None:
            x, y = torch.as_tensor(train_x).to(device), torch.as_tensor(train_c).to(device)
            x, q = reduce_wide(x, torch.as_tensor(test_x).to(device), probe_width(x.shape[1], len(x)), seed)
            if name == "knn":
                pred = knn_predict(x, y, q, num_classes, k)
            elif name == "linear":  # on the CPU, in numpy
                s_tr, s_te = standardise(x, q)
                pred = torch.as_tensor(linear_predict(s_tr.cpu().numpy(), train_c, s_te.cpu().numpy()))
            else:
                pred = mlp_predict([(x, y, q)], num_classes, seed)[0]
            pred = pred.cpu().numpy()
            if path is not None:
                files.save_npy(pred, path)
        return pred

    uses = Counter(job for *_, names in plans.values() for job in names.values())
    preds = run_fits(jobs, run, device, workers, lambda job: uses[job] if progress else 0, progress)
    out = {}
    for key, (classes, test_c, names) in plans.items():
        n_train, width = np.shape(sets[key][0])
        out[key] = {name: {"accuracy": float(accuracy_score(test_c, preds[job])),
                           "macro_f1": float(f1_score(test_c, preds[job], average="macro", zero_division=0)),
                           "predictions": classes[preds[job]], "probed_dims": probe_width(width, n_train)}
                    for name, job in names.items()}
    return out
