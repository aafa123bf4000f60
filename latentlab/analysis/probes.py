"""Classifier probes on features: one engine, two protocols. The engine (probe_scores_of_sets) fits
each probe on the training rows of each split (train rows, test rows) of a set and predicts its test
rows. Cross-validation (cv_splits) gives it the stratified k folds of one set, so each sample is
predicted by a probe fit on the other folds only; the held-out protocol (heldout_set) gives it one
split, training features then test features, fit once and scored once, as the literature does.

linear = scikit-learn's logistic regression and mlp = one hidden layer of 256 ReLU units (torch,
every fold's MLP trained at once), both on features standardised on each training fold; knn =
k-nearest neighbours (Euclidean, torch) on the features as they are, so it measures the space's own
geometry (standardising would blow up PCA's low-variance components). Each gives every row a
probability per class (its softmax; knn: the share of votes): the prediction is the most probable.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentlab.analysis import mlp_probe
from latentlab.analysis.flags import FOLDS
from latentlab.store import files
from latentlab.analysis.mlp_probe import mlp_predict, standardise

KNN_K = 10
HELDOUT_KNN_KS = (5, 10)  # 5: the k-NN of Sainburg et al. 2021 (Parametric UMAP); 10: the cross-validated probe's
# wider features (the raw pixels of larger images) are reduced by PCA on the training rows first,
# as a probe's cost grows with the width
MAX_PROBE_FEATURES = 1024
LINEAR_C = 1.0  # scikit-learn's default L2 strength
PROBE_VERSION = 7  # bump when a probe's training changes: cached predictions of older probes are not reused


def _linear(fits: list, num_classes: int, k: int, seed: int) -> list[torch.Tensor]:
    """scikit-learn's LogisticRegression (multinomial, L2 with C = 1, lbfgs) on features
    standardised on the training rows, on the CPU, in numpy: its predict_proba, with a column for
    every class (a class absent from the training rows has probability 0)."""
    from sklearn.linear_model import LogisticRegression
    out = []
    for x, y, q in fits:
        x, q = standardise(x, q)
        model = LogisticRegression(C=LINEAR_C).fit(x.cpu().numpy(), y.cpu().numpy())
        proba = torch.zeros(len(q), num_classes, dtype=torch.float32)
        proba[:, torch.as_tensor(model.classes_)] = torch.as_tensor(model.predict_proba(q.cpu().numpy()), dtype=torch.float32)
        out.append(proba)
    return out


def _knn(fits: list, num_classes: int, k: int, seed: int, chunk: int = 2048) -> list[torch.Tensor]:
    """The votes of the k nearest training rows (Euclidean) over k; argmax breaks ties to the smaller
    class index, as scikit-learn's KNeighborsClassifier; queries in chunks, so memory stays bounded."""
    return [torch.cat([F.one_hot(y[torch.cdist(c, x).topk(k, largest=False).indices], num_classes).sum(1) / k
                       for c in q.split(chunk)]).float() for x, y, q in fits]


# each predictor: fits [(train features, train labels, test features)] -> each test row's probability
# of each class (n, classes), per fit
PREDICTORS = {"linear": _linear, "knn": _knn, "mlp": lambda fits, num_classes, k, seed: mlp_predict(fits, num_classes, seed)}
PROBES = tuple(PREDICTORS)


def cv_splits(labels: np.ndarray, folds: int, seed: int) -> list:
    """The cross-validation protocol's splits of one set: StratifiedKFold(folds, shuffle=True,
    random_state=seed) of labels, [(train rows, test rows)]; it needs two classes and at least
    `folds` samples in the largest."""
    from sklearn.model_selection import StratifiedKFold
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    if len(counts) < 2:
        raise ValueError("the samples hold a single class; a classifier needs at least two")
    if counts.max() < folds:
        raise ValueError(f"{folds}-fold cross-validation needs a class with at least {folds} samples, the largest has "
                         f"{counts.max()}")
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def heldout_set(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> tuple:
    """The held-out protocol's set: (features, labels, splits), the training rows then the test
    rows, one split that fits on the first and scores the second."""
    n, m = len(train_y), len(test_y)
    return (np.concatenate([train_x, test_x]), np.concatenate([np.asarray(train_y), np.asarray(test_y)]),
            [(np.arange(n), np.arange(n, n + m))])


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


def probe_scores(features: np.ndarray, labels: np.ndarray, probes=PROBES, folds: int = FOLDS, seed: int = 0,
                 knn_k: int = KNN_K, progress=None, device="cpu", cache_dir=None, workers: int | None = None) -> dict:
    """The cross-validated scores of one feature set: probe_scores_of_sets on its cv_splits."""
    return probe_scores_of_sets({0: (features, labels, cv_splits(labels, folds, seed))}, probes, seed, (knn_k,),
                                progress, device, cache_dir, workers)[0]


def probe_scores_of_sets(sets: dict, probes=PROBES, seed: int = 0, knn_ks=(KNN_K,), progress=None, device="cpu",
                         cache_dir=None, workers: int | None = None) -> dict:
    """Score classifiers out of fold on each feature set: sets {key: (features (n, d), labels (n,),
    splits [(train rows, test rows)])} -> {key: {probe: {"accuracy", "macro_f1", "predictions",
    "confidence", "probed_dims"}}}. Each split's probe is fit on its training rows and predicts its test rows; the
    scores are over the rows scored (those some split tests, in their order: every row under
    cv_splits, the test rows under heldout_set), "predictions" their classes, "confidence" the
    probability the probe gave each prediction, "probed_dims" the width
    the probes saw (probe_width: wide features are reduced by PCA), and over several splits
    "fold_accuracy_std" the spread of the per-split accuracies. k-NN uses min(k, smallest training
    rows) neighbours for each k of knn_ks: one entry "knn" (with its "k") for one k, else "knn{k}".

    cache_dir: where each probe's class probabilities are kept, keyed by the content of the features, labels
    and splits, the probe, the seed, k and the device type, so features scored once (the raw pixels
    and PCA baselines of a test set, above all) are not fit again; sets of the same content are fit once.
    workers: fits (one probe on one set, all splits) run at once, each on one thread (default: on a
    CPU one per core, as the probes are too small to split over cores; on a GPU one).
    progress: optional callable () -> None, called once per split when a fit is done, for each set it scores.
    """
    unknown = [name for name in probes if name not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from {PROBES}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    plans, jobs = {}, {}
    for key, (features, labels, splits) in sets.items():
        classes, codes = np.unique(np.asarray(labels), return_inverse=True)
        codes = codes.reshape(-1).astype(np.int64)
        if any(len(np.unique(codes[tr])) < 2 for tr, _ in splits):
            raise ValueError("the training rows hold a single class; a classifier needs at least two")
        features = np.ascontiguousarray(features, dtype=np.float32)
        smallest = min(len(tr) for tr, _ in splits)
        scored = np.unique(np.concatenate([te for _, te in splits]))
        plans[key] = (classes, codes, splits, scored, probe_width(features.shape[1], smallest), {})
        content = files.content_key({"shape": list(features.shape), "splits": [[len(tr), len(te)] for tr, te in splits]},
                                    features, codes, *(np.asarray(a, dtype=np.int64) for split in splits for a in split))
        for name in probes:
            for k in (knn_ks if name == "knn" else (0,)):
                k = max(1, min(k, smallest)) if name == "knn" else 0
                job = _fit_key(name, device, k, seed, content)
                jobs.setdefault(job, (name, features, codes, splits, scored, len(classes), k))
                plans[key][-1][f"knn{k}" if name == "knn" and len(knn_ks) > 1 else name] = job, k
    uses = Counter(job for *_, entries in plans.values() for job, _ in entries.values())  # (set, entry) pairs per fit
    ticks = {job: len(jobs[job][3]) * uses[job] if progress else 0 for job in jobs}
    preds = _fit_all(jobs, seed, device, cache_dir, workers, ticks, progress)
    return {key: _scores(*plan, preds) for key, plan in plans.items()}


def _scores(classes, codes, splits, scored, width, entries, preds) -> dict:
    """One set's scores {entry: {...}} from the predictions of its scored rows."""
    from sklearn.metrics import accuracy_score, f1_score
    out = {}
    for entry, (job, k) in entries.items():
        proba = preds[job]
        pred, full = proba.argmax(1), np.zeros_like(codes)
        full[scored] = pred
        out[entry] = {"accuracy": float(accuracy_score(codes[scored], pred)),
                      "macro_f1": float(f1_score(codes[scored], pred, average="macro", zero_division=0))}
        if len(splits) > 1:
            out[entry]["fold_accuracy_std"] = float(np.std([accuracy_score(codes[te], full[te]) for _, te in splits]))
        out[entry].update(predictions=classes[pred], confidence=proba.max(1), probed_dims=width, **({"k": k} if entry == "knn" else {}))
    return out


def _fit_all(jobs: dict, seed: int, device, cache_dir, workers: int | None, ticks: dict, progress) -> dict:
    """{job: class probabilities of its scored rows} for every job, fits side by side on threads;
    progress() is called ticks[job] times when a job is done."""
    from joblib import Parallel, delayed
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits
    if workers is None:
        workers = max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1
    threads, preds = torch.get_num_threads(), {}
    # fits side by side in threads share the cores (torch's and scikit-learn's kernels release the
    # GIL), each on one thread, so none contends with another for the cores; restored after
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # the linear probe's budget is scikit-learn's default max_iter, as in step 6's notes
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            # an error (or Ctrl-C) stops the fits not yet started rather than waiting for them
            done = Parallel(max(1, min(workers, len(jobs))), prefer="threads", return_as="generator")(
                delayed(_fit)(job, *jobs[job], seed, device, cache_dir) for job in jobs)
            for job, pred in zip(jobs, done):
                preds[job] = pred
                for _ in range(ticks[job]):
                    progress()
        finally:
            torch.set_num_threads(threads)
    return preds


def _fit(job: str, name: str, features, codes, splits, scored, num_classes: int, k: int, seed: int, device,
         cache_dir) -> np.ndarray:
    """One probe on one set: the class probabilities of its scored rows (len(scored), num_classes),
    from the cache or fit (and cached)."""
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # this thread's OpenMP (scikit-learn's own copy) and BLAS
    path = None if cache_dir is None else Path(cache_dir) / f"probe_{name}_{job}.npy"
    proba = files.load_cached_npy(path, lambda p: p.shape == (len(scored), num_classes) and p.dtype == np.float32
                                  and ((p >= 0) & (p <= 1)).all())
    if proba is None:
        x, y = torch.as_tensor(features).to(device), torch.as_tensor(codes).to(device)
        proba = _out_of_fold(name, x, y, splits, num_classes, seed, k)[scored]
        if path is not None:
            files.save_npy(proba, path)
    return proba


def _out_of_fold(name: str, x: torch.Tensor, y: torch.Tensor, splits, num_classes: int, seed: int, k: int) -> np.ndarray:
    """Each split's test rows' class probabilities by the probe fit on its training rows: (n,
    num_classes) float32 (rows no split tests hold zeros)."""
    pred = torch.zeros(len(y), num_classes, dtype=torch.float32, device=x.device)
    folds = [(torch.as_tensor(tr, device=x.device), torch.as_tensor(te, device=x.device)) for tr, te in splits]
    width = probe_width(x.shape[1], min(len(tr) for tr, _ in splits))  # the same in every fold: the MLPs are stacked
    fits = []
    for tr, te in folds:
        train_x, test_x = reduce_wide(x[tr], x[te], width, seed)
        fits.append((train_x, y[tr], test_x))
    for (_, te), p in zip(folds, PREDICTORS[name](fits, num_classes, k, seed)):
        pred[te] = p.to(pred.device)
    return pred.cpu().numpy()


def _fit_key(name: str, device, k: int, seed: int, content: str) -> str:
    """The cache key of one probe's fit: the probe, its version and budget, the device type, torch,
    k, the seed, and the content key of its set (features, labels and splits)."""
    return files.content_key({"probe": name, "version": PROBE_VERSION, "device": torch.device(device).type,
                              "epochs": [mlp_probe.PROBE_EPOCHS, mlp_probe.PROBE_MIN_STEPS],
                              "max_features": MAX_PROBE_FEATURES, "torch": torch.__version__.split("+")[0],
                              "k": k, "seed": seed, "set": content})
