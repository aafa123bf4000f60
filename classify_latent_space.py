"""Step 6: classifiers on the latents, scored on samples they never saw, beside PCA and raw pixels.

    python classify_latent_space.py --latent_space output/latent_space_size_256.npy
    python classify_latent_space.py                     # after encode_latent_space.py: the latents in output/

Which data trains and which scores: the encoded test images (encode_latent_space.py; the
autoencoders and the PCA never saw them) are split by stratified k-fold (--folds, shuffled with
--seed). Each classifier is fit on k-1 folds and predicts the held-out fold, so every sample is
predicted by a classifier that never saw it; accuracy and macro-F1 are computed over all those
held-out predictions. Classifiers: a linear probe (logistic regression), 10-NN, and an MLP (one
hidden layer of 256); the linear probe and the MLP on standardised features, 10-NN on the features
as they are. The same classifiers run on the PCA features of the same size (pca_baseline.pth, fit
on the training split) and on the raw pixels of the same test images. They run in torch on
--device; each one's held-out predictions are cached in --output_dir/cache by the content of the
features, so the raw-pixel and PCA baselines of a test set are fit once, not for every model.
Writes to --output_dir: classification_latent_size_{N}.json and confusion_matrix_latent_size_{N}.png
(the best classifier on each latent space).
"""
from latentlab.cli import at_least_two, make_parser, run
from latentlab.inputs import add_input_flags
from latentlab.probes import PROBES


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space", "test_data", "pca_baseline")
    g = p.add_argument_group("step")
    g.add_argument("--folds", type=at_least_two, default=5, help="folds of the stratified cross-validation")
    g.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES, help="classifiers to run")
    return p.parse_args(argv)


def main(args) -> dict:
    from pathlib import Path

    from sklearn.metrics import confusion_matrix
    from tqdm import tqdm

    from latentlab import files, plots
    from latentlab.artifacts import check_latents_match
    from latentlab.cli import pick_device, seed_everything, worded
    from latentlab.datasets import to_float
    from latentlab.inputs import find_latents, find_pca_baseline, find_test_data, say
    from latentlab.pca import pca_encode
    from latentlab.probes import PROBE_EPOCHS, PROBE_MIN_STEPS, check_folds, probe_scores_of_sets

    seed_everything(args.seed)
    device = pick_device(args.device)
    out = Path(args.output_dir)
    data, data_path = find_test_data(args.test_data, args.output_dir)
    latents = find_latents(args.latent_space, args.output_dir, data, args.quiet)
    for lat in latents:
        check_latents_match(lat, data, data_path)
        with worded("encode more with encode_latent_space.py --num_samples, or lower --folds"):
            check_folds(lat.labels, args.folds)
    pca = find_pca_baseline(args.pca_baseline, data, data_path, [lat.latent_size for lat in latents])
    images = data["images"]
    main_l = latents[-1]

    def features(lat):
        """name -> (samples, d) float features of the same test images: latents, PCA of that size, pixels."""
        x = images[lat.indices]
        k = min(lat.latent_size, pca["components"].shape[0])
        return {"latent": lat.z, "pca": pca_encode(x, pca["mean"], pca["components"], k).numpy(),
                "raw_pixels": to_float(x.reshape(len(x), -1)).numpy()}

    sets = {(lat.latent_size, name): (x, lat.labels) for lat in latents for name, x in features(lat).items()}
    with tqdm(total=len(sets) * len(args.probes) * args.folds, desc="classifiers", unit="fit", disable=args.quiet,
              leave=False) as bar:
        # every feature set at once, side by side; the raw pixels both models share are fit once
        scored = probe_scores_of_sets(sets, args.probes, args.folds, args.seed, progress=bar.update, device=device,
                                      cache_dir=out / "cache")
    results, panels = {}, []
    for lat in latents:
        row = {"model": lat.label, "latents": str(lat.path), "samples": len(lat.z)}
        for name in ("latent", "pca", "raw_pixels"):
            scores = scored[lat.latent_size, name]
            if name == "latent":
                best = max(scores, key=lambda p: scores[p]["accuracy"])
                cm = confusion_matrix(lat.labels, scores[best]["predictions"], labels=range(len(lat.class_names)))
                panels.append((cm, f"{lat.label}\n{best} probe on the latents: accuracy {scores[best]['accuracy']:.3f}"))
            row[name] = {p: {m: v for m, v in s.items() if m != "predictions"} for p, s in scores.items()}
            row[name]["dims"] = int(sets[lat.latent_size, name][0].shape[1])
        results[str(lat.latent_size)] = row
    title = f"confusion matrices on held-out folds ({args.folds}-fold cross-validation over {len(main_l.z)} encoded test images)"
    figure = files.save_figure(plots.confusion_figure(panels, main_l.class_names, title),
                                   out / f"confusion_matrix_latent_size_{main_l.latent_size}.png")
    metrics = {"step": "classification", "dataset": main_l.dataset, "folds": args.folds, "seed": args.seed,
               "probes": args.probes, "figure": str(figure), "models": results,
               "notes": f"features of the encoded test images (the autoencoders and PCA were fit on the training split); "
                        f"stratified {args.folds}-fold cross-validation, shuffle seeded with {args.seed}: each sample is "
                        f"predicted by a classifier fit on the other folds; accuracy and macro-F1 over all held-out "
                        f"predictions, fold_accuracy_std across folds. linear = logistic regression (L2, C=1, L-BFGS up to 100 "
                        f"iterations), mlp = one hidden layer of 256 ReLU units (Adam, {PROBE_EPOCHS} epochs and at least {PROBE_MIN_STEPS} steps), both on "
                        f"standardised features; knn = 10-NN on the features as they are"}
    path = files.save_json(metrics, out / f"classification_latent_size_{main_l.latent_size}.json")
    if not args.quiet:
        print_table(results, args.probes)
        say(False, f"wrote {figure} and {path}")
    return metrics


def print_table(results: dict, probes: list) -> None:
    head = f"{'features':<44} {'dims':>5} " + " ".join(f"{p + ' acc/F1':>14}" for p in probes)
    lines = [head, "-" * len(head)]
    for r in results.values():
        for name, label in (("latent", r["model"]), ("pca", "  PCA, same size"), ("raw_pixels", "  raw pixels")):
            s = r[name]
            lines.append(f"{label[:44]:<44} {s['dims']:>5} " + " ".join(
                f"{s[p]['accuracy']:>7.3f}/{s[p]['macro_f1']:.3f}" for p in probes))
    print("\n".join(lines))


if __name__ == "__main__":
    run(main, parse_args())
