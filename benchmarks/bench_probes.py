"""Step 6's probes (latentlab.analysis.probes) against scikit-learn's classifiers of the same kind, on the
same stratified folds: LogisticRegression, KNeighborsClassifier(10) and MLPClassifier (256 hidden,
Adam, lr 1e-3, batches of 256, the same number of epochs), the first and last on standardised
features.

    python benchmarks/bench_probes.py --latent_space output/latent_space_size_256.npy
    python benchmarks/bench_probes.py --latent_space output/latent_space_size_256.npy --raw_pixels
    python benchmarks/bench_probes.py --digits

Prints each side's out-of-fold accuracy and seconds, and the accuracy difference.
"""
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sklearn_probe(name: str, epochs: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from latentlab.analysis.mlp_probe import MLP_BATCH, MLP_HIDDEN, MLP_LR, MLP_WEIGHT_DECAY
    from latentlab.analysis.probes import KNN_K
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=KNN_K)
    if name == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression())
    return make_pipeline(StandardScaler(), MLPClassifier((MLP_HIDDEN,), alpha=MLP_WEIGHT_DECAY, batch_size=MLP_BATCH,
                                                         learning_rate_init=MLP_LR, max_iter=epochs, n_iter_no_change=epochs,
                                                         random_state=0))


def load_features(args):
    """(features (n, d) float32, labels (n,), what they are in words)."""
    import numpy as np

    from latentlab.store import artifacts, files, latent_files
    from latentlab.cli import UserError
    from latentlab.data.datasets import to_float
    if args.digits:
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
        return x.astype(np.float32), y, "the 1797 8x8 digits' pixels"
    if not args.latent_space:
        raise UserError("give --latent_space (a latent_space_size_{N}.npy written by encode_latent_space.py) or --digits")
    latents = latent_files.load_latents(args.latent_space)
    z, labels = latents.z, latents.labels
    if not args.raw_pixels:
        return z, labels, f"{z.shape[1]}-d latents of {len(z)} test images"
    beside = files.test_data_path(Path(args.latent_space).parent)  # still found when the folder was moved
    images = artifacts.load_test_data(beside if beside.is_file() else latents.meta["test_data"])["images"][latents.indices]
    return to_float(images.reshape(len(images), -1)).numpy(), labels, f"raw pixels of {len(images)} test images"


def main(argv=None):
    from latentlab.analysis.flags import add_folds
    from latentlab.cli import Parser
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latent_space", help="a latent_space_size_{N}.npy written by encode_latent_space.py")
    p.add_argument("--raw_pixels", action="store_true", help="the raw pixels of the same test images instead of the latents")
    p.add_argument("--digits", action="store_true", help="scikit-learn's 8x8 digits instead of a latents file")
    p.add_argument("--probes", nargs="+", default=["linear", "knn", "mlp"], choices=["linear", "knn", "mlp"])
    add_folds(p)
    args = p.parse_args(argv)
    import math

    import numpy as np
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from latentlab.analysis import mlp_probe, probes
    x, labels, what = load_features(args)
    y = np.unique(labels, return_inverse=True)[1].reshape(-1)
    splits = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(x, y))
    n_train = max(len(tr) for tr, _ in splits)
    steps, batch = mlp_probe.probe_steps(n_train)
    epochs = math.ceil(steps / math.ceil(n_train / batch))
    print(f"{what}, {args.folds}-fold cross-validation")
    print(f"{'probe':<7} {'scikit-learn acc':>17} {'s':>6} {'latentlab acc':>14} {'s':>6} {'difference':>11}")
    for name in args.probes:
        start = time.perf_counter()
        pred = np.empty_like(y)
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore")  # MLPClassifier's "maximum iterations reached"
            for tr, te in splits:
                pred[te] = sklearn_probe(name, epochs).fit(x[tr], y[tr]).predict(x[te])
        theirs, theirs_s = (pred == y).mean(), time.perf_counter() - start
        start = time.perf_counter()
        ours = probes.probe_scores(x, y, (name,), args.folds, seed=0)[name]["accuracy"]
        ours_s = time.perf_counter() - start
        print(f"{name:<7} {theirs:>17.4f} {theirs_s:>6.1f} {ours:>14.4f} {ours_s:>6.1f} {ours - theirs:>+11.4f}", flush=True)


if __name__ == "__main__":
    from latentlab.cli import run
    run(main, sys.argv[1:])
