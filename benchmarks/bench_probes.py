"""Step 6's probes (torch, metrics.probe_predict) against scikit-learn's classifiers of the same
kind, which step 6 ran before, on one fold, in one run.

    python benchmarks/bench_probes.py --latent_space output/quality/latent_space_size_256.npy
    python benchmarks/bench_probes.py --latent_space output/quality/latent_space_size_256.npy --raw_pixels

Fits each probe on 80% of the latents (or of the raw pixels of the same test images) and scores
it on the other 20%, both ways: scikit-learn's LogisticRegression (max_iter 1000), KNeighbors
(10) and MLPClassifier (256 hidden, 300 iterations), with numpy's BLAS on one thread (with torch
loaded, two BLAS threads made them 8x slower on a 2-core CPU), against the torch probes. Prints
the seconds, the accuracies, and the speed ratio.
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sklearn_probe(name: str):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=10)
    clf = LogisticRegression(max_iter=1000) if name == "linear" else MLPClassifier((256,), max_iter=300, random_state=0)
    return make_pipeline(StandardScaler(), clf)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latent_space", required=True, help="a latent_space_size_{N}.npy written by encode_latent_space.py")
    p.add_argument("--raw_pixels", action="store_true", help="the raw pixels of the same test images instead of the latents")
    p.add_argument("--probes", nargs="+", default=["linear", "knn", "mlp"], choices=["linear", "knn", "mlp"])
    args = p.parse_args(argv)
    import numpy as np
    import torch
    from sklearn.model_selection import train_test_split

    from latentlab import artifacts
    from latentlab.metrics import one_blas_thread, probe_predict, to_float
    z, meta = artifacts.load_latents(args.latent_space)
    labels = np.unique(np.asarray(meta["labels"]), return_inverse=True)[1]
    if args.raw_pixels:
        beside = artifacts.test_data_path(Path(args.latent_space).parent)  # still found when the folder was moved
        source = beside if beside.is_file() else meta["test_data"]
        images = artifacts.load_test_data(source)["images"][np.asarray(meta["indices"])]
        z, what = to_float(images.reshape(len(images), -1)).numpy(), "raw pixels"
    else:
        what = f"{z.shape[1]}-d latents"
    tr, te = train_test_split(np.arange(len(z)), test_size=0.2, stratify=labels, random_state=0)
    x, y = np.asarray(z, np.float32), labels
    print(f"{what}: fit on {len(tr)}, scored on {len(te)}; torch {torch.get_num_threads()} threads")
    print(f"{'probe':<7} {'scikit-learn s':>15} {'acc':>6} {'torch s':>8} {'acc':>6} {'speed-up':>9}")
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for name in args.probes:
        start = time.perf_counter()
        with warnings.catch_warnings(), one_blas_thread():
            warnings.simplefilter("ignore")
            sk_acc = (sklearn_probe(name).fit(x[tr], y[tr]).predict(x[te]) == y[te]).mean()
        sk = time.perf_counter() - start
        start = time.perf_counter()
        pred = probe_predict(name, xt[tr], yt[tr], xt[te], int(y.max()) + 1).numpy()
        ours = time.perf_counter() - start
        print(f"{name:<7} {sk:>15.1f} {sk_acc:>6.3f} {ours:>8.1f} {(pred == y[te]).mean():>6.3f} {sk / ours:>8.1f}x")


if __name__ == "__main__":
    main()
