"""Step 6: classifiers on the latents, scored on samples they never saw, beside PCA and raw pixels.

    python classify_latent_space.py --latent_space output/latent_space_size_256.npy
    python classify_latent_space.py                     # after encode_latent_space.py: the latents in output/
    python classify_latent_space.py --protocol heldout  # after encode_latent_space.py --split train as well

Which data trains and which scores (the autoencoders and the PCA were fit on the training split):
--protocol cv (the default) uses the encoded test images alone, split by stratified k-fold (--folds,
shuffled with --seed); each classifier is fit on k-1 folds and predicts the held-out fold, so every
sample is predicted by a classifier that never saw it. --protocol heldout is the literature's: each
classifier is fit on the encoded training split (latent_space_size_{N}_train.npy beside the test
latents, from encode_latent_space.py --split train) and scores the encoded test images once.
Classifiers: a linear probe (logistic regression), k-NN (cv: 10-NN; heldout: 5-NN and 10-NN), and an
MLP (one hidden layer of 256); the linear probe and the MLP on standardised features, k-NN on the
features as they are. The same classifiers run on the PCA features of the same size
(pca_baseline.pth) and on the raw pixels of the same images (heldout: the training images re-read
from the dataset), in torch on --device; predictions are cached in --output_dir/cache by content, so
the baselines are fit once, not for every model. Writes to --output_dir: classification_latent_size_{N}.json
(the scores, and the class the classifier most accurate on the N-d latents predicts for each test
latent, for the explorer) and confusion_matrix_latent_size_{N}.png (that classifier, every model).
"""
from latentlab.cli import make_parser, run, show_progress, text_table
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_folds
from latentlab.analysis.probes import PROBES

PROTOCOLS = ("cv", "heldout")
FEW_TEST = "encode more with encode_latent_space.py --num_samples, or lower --folds"
BASELINES = {"pca": "pca", "pixels": "raw_pixels"}  # flag value -> feature set


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space", "test_data", "pca_baseline")
    g = p.add_argument_group("step")
    g.add_argument("--protocol", choices=PROTOCOLS, default="cv",
                   help="cv: stratified k-fold inside the encoded test images; heldout: fit on the encoded training "
                        "split, score the test images once")
    add_folds(g, "cv: folds of the stratified cross-validation")
    g.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES, help="classifiers to run")
    g.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                   help="the baselines scored beside the latents: PCA of the same size, raw pixels (wider than "
                        "1024 features: first reduced by PCA on the training rows); the flag alone: none")
    return p.parse_args(argv)


def feature_sets(lat, images, names, pca) -> dict:
    """name -> (samples, d) float features of the images lat encoded: latents, PCA of that size, pixels."""
    from latentlab.analysis.pca import pca_encode
    from latentlab.data.datasets import to_float
    x = images[lat.indices] if images is not None else None
    made = {"latent": lambda: lat.z,
            "pca": lambda: pca_encode(x, pca["mean"], pca["components"],
                                      min(lat.latent_size, pca["components"].shape[0])).numpy(),
            "raw_pixels": lambda: to_float(x.reshape(len(x), -1)).numpy()}
    return {name: made[name]() for name in names}


def cv_plan(args, latents, data, names, pca) -> dict:
    """--protocol cv: every feature set of the test images split by stratified k-fold."""
    import numpy as np
    from latentlab.cli import worded
    from latentlab.analysis.probes import KNN_K, cv_splits
    sets = {}
    for lat in latents:
        with worded(FEW_TEST):
            splits = cv_splits(lat.labels, args.folds, args.seed)
        sets.update({(lat.latent_size, n): (x, lat.labels, splits)
                     for n, x in feature_sets(lat, data["images"], names, pca).items()})
    counts = np.unique(latents[-1].labels, return_counts=True)[1]
    return {"sets": sets, "knn_ks": (KNN_K,), "trains": [], "rows": {}, "folds": args.folds,
            "hint": FEW_TEST,
            "train_counts": counts - -(-counts // args.folds),  # a class's held-out folds differ by at most one image
            "how": f"{args.folds}-fold cross-validation over {len(latents[-1].z)} encoded test images",
            "notes": f"protocol cv: features of the encoded test images alone; stratified {args.folds}-fold "
                     f"cross-validation, shuffle seeded with {args.seed}: each sample is predicted by a classifier "
                     f"fit on the other folds; accuracy and macro-F1 over all held-out predictions, "
                     f"fold_accuracy_std across folds; knn = {KNN_K}-NN"}


def heldout_plan(args, latents, data, names, pca) -> dict:
    """--protocol heldout: every feature set fit on the encoded training split (the baselines on its
    images, re-read from the dataset) and scored once on the test images."""
    import numpy as np
    from latentlab.analysis.probes import HELDOUT_KNN_KS, heldout_set
    from latentlab.store.inputs import training_images, training_latents
    trains = [training_latents(lat, "--protocol heldout", "use --protocol cv to score within the test latents alone")
              for lat in latents]
    images = training_images(trains) if len(names) > 1 else None
    sets = {}
    for lat, train in zip(latents, trains):
        fit_on = feature_sets(train, images, names, pca)
        sets.update({(lat.latent_size, n): heldout_set(fit_on[n], train.labels, x, lat.labels)
                     for n, x in feature_sets(lat, data["images"], names, pca).items()})
    t = trains[-1]
    return {"sets": sets, "knn_ks": HELDOUT_KNN_KS, "trains": trains, "folds": None,
            "rows": {lat.latent_size: {"training_latents": str(tr.path), "training_samples": len(tr.z)}
                     for lat, tr in zip(latents, trains)},
            "hint": "encode more training images with encode_latent_space.py --split train --num_samples",
            "train_counts": np.unique(t.labels, return_counts=True)[1],
            "how": f"fit on {len(t.z)} encoded training images, scored once on {len(latents[-1].z)} encoded test images",
            "notes": f"protocol heldout: every classifier is fit on the features of the encoded training split "
                     f"({t.meta.get('selection')}) and scores the features of the encoded test images once; "
                     f"the PCA and raw-pixel baselines on the same training and test images; knn5 and knn10 = "
                     f"{' and '.join(map(str, HELDOUT_KNN_KS))} nearest neighbours (5 as Sainburg et al. 2021)"}


def main(args) -> dict:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from latentlab import caveats, plots
    from latentlab.analysis.probes import best_probe, probe_scores_of_sets
    from latentlab.cli import memory_for, pick_device, seed_everything, worded
    from latentlab.store import files
    from latentlab.store.latent_files import check_latents_match
    from latentlab.store.inputs import find_latents, find_pca_baseline, find_test_data
    from latentlab.store.runs import claim

    seed_everything(args.seed)
    device = pick_device(args.device)
    out = Path(args.output_dir)
    data, data_path = find_test_data(args.test_data, args.output_dir)
    latents = find_latents(args.latent_space, args.output_dir, data, args.quiet)
    for lat in latents:
        check_latents_match(lat, data, data_path)
    names = ["latent", *(BASELINES[b] for b in dict.fromkeys(args.baselines))]
    pca = (find_pca_baseline(args.pca_baseline, data, data_path, [lat.latent_size for lat in latents])
           if "pca" in names else None)
    plan = (heldout_plan if args.protocol == "heldout" else cv_plan)(args, latents, data, names, pca)
    run = claim(out, (data_path, data), *latents, *plan["trains"], by="classify_latent_space.py")
    fits = (sum(len(splits) for *_, splits in plan["sets"].values())
            * sum(len(plan["knn_ks"]) if p == "knn" else 1 for p in args.probes))
    with tqdm(total=fits, desc="classifiers", unit="fit", disable=not show_progress(args.quiet), leave=False) as bar, \
            memory_for("the classifiers on these latents", "the latents' --num_samples (encode_latent_space.py)"), \
            worded(plan["hint"]):
        # every feature set at once, side by side; the raw pixels both models share are fit once
        scored = probe_scores_of_sets(plan["sets"], args.probes, args.seed, plan["knn_ks"], bar.update, device,
                                      out / "cache")
    main_l = latents[-1]
    shown = best_probe(scored[main_l.latent_size, "latent"])  # one probe in every panel: like for like
    results, panels, predictions, confidence = tabulate(latents, names, plan, scored, shown)
    found = caveats.of_latents(latents) + caveats.per_class_caveat(plan["train_counts"], "a probe's training fold holds")
    found += caveats.per_class_caveat(np.unique(main_l.labels, return_counts=True)[1], "the test images scored hold")
    found += list(dict.fromkeys(  # one line for the pixels both models share
        f"{label} ({r[n]['dims']} features) reduced to {r[n]['probed_dims']} principal components of the training "
        f"rows before the probes" for r in results.values() for n, label in (("pca", "PCA"), ("raw_pixels", "raw pixels"))
        if "probed_dims" in r.get(n, {})))
    title = (f"confusion matrices of the test images ({plan['how']})\n"
             f"both panels: the {shown} probe, the most accurate on the {main_l.latent_size}-d latents")
    figure = files.save_figure(plots.confusion_figure(panels, main_l.class_names, title),
                               out / f"confusion_matrix_latent_size_{main_l.latent_size}.png")
    metrics = {"step": "classification", "run": run, "protocol": args.protocol, "dataset": main_l.dataset,
               "folds": plan["folds"], "seed": args.seed, "probes": args.probes, "baselines": args.baselines,
               "figure": str(figure), "figure_probe": shown, "models": results, "caveats": found,
               "notes": plan["notes"] + probe_notes(),
               "predictions": {"probe": shown, "protocol": args.protocol, "by_latent_size": predictions,
                               "confidence_by_latent_size": confidence}}
    path = files.save_json(metrics, out / f"classification_latent_size_{main_l.latent_size}.json")
    print(f"protocol {args.protocol}: {plan['how']}")
    print_table(results)
    caveats.print_caveats(found)
    print(f"wrote {figure} and {path}")
    return metrics


def tabulate(latents, names, plan, scored, shown) -> tuple[dict, list, dict, dict]:
    """The JSON's rows {latent size: row}, the confusion panels of the probe shown, and its
    predictions of each test latent {latent size: [class index per row]} with their confidence
    {latent size: [the probability the probe gave its prediction, per row]}."""
    from sklearn.metrics import confusion_matrix
    results, panels, predictions, confidence = {}, [], {}, {}
    for lat in latents:
        row = {"model": lat.label, "latents": str(lat.path), "samples": len(lat.z), **plan["rows"].get(lat.latent_size, {})}
        for name in names:
            scores = scored[lat.latent_size, name]
            if name == "latent":
                predictions[str(lat.latent_size)] = scores[shown]["predictions"].tolist()
                confidence[str(lat.latent_size)] = scores[shown]["confidence"].round(4).tolist()
                cm = confusion_matrix(lat.labels, scores[shown]["predictions"], labels=range(len(lat.class_names)))
                panels.append((cm, f"{lat.label}\n{shown} probe on the latents: accuracy {scores[shown]['accuracy']:.3f}"))
            row[name] = {p: {m: v for m, v in s.items() if m not in ("predictions", "confidence", "probed_dims")}
                         for p, s in scores.items()}
            row[name]["dims"] = int(plan["sets"][lat.latent_size, name][0].shape[1])
            probed = next(iter(scores.values()))["probed_dims"]
            if probed < row[name]["dims"]:  # reduced by PCA before the probes
                row[name]["probed_dims"] = probed
        results[str(lat.latent_size)] = row
    return results, panels, predictions, confidence


def probe_notes() -> str:
    """What the JSON's notes say of the probes under either protocol, from their constants."""
    from latentlab.analysis.mlp_probe import MLP_HIDDEN, PROBE_EPOCHS, PROBE_MIN_STEPS
    from latentlab.analysis.probes import LINEAR_C, MAX_PROBE_FEATURES
    return (f". Features wider than {MAX_PROBE_FEATURES} are first reduced to their principal components "
            f"(scikit-learn PCA fit on each training fold, at most {MAX_PROBE_FEATURES}; probed_dims)"
            f". The autoencoders and PCA were fit on the training split. linear = logistic regression (L2, C={LINEAR_C:g}, "
            f"L-BFGS up to 100 iterations), mlp = one hidden layer of {MLP_HIDDEN} ReLU units (Adam, {PROBE_EPOCHS} epochs "
            f"over the training fold and at least {PROBE_MIN_STEPS} steps), both on standardised features; k-NN on "
            f"the features as they are")


def print_table(results: dict) -> None:
    probes = [p for p in next(iter(results.values()))["latent"] if p not in ("dims", "probed_dims")]
    rows = [[label, str(r[name]["dims"]), *(f"{r[name][p]['accuracy']:.3f}/{r[name][p]['macro_f1']:.3f}" for p in probes)]
            for r in results.values()
            for name, label in (("latent", r["model"]), ("pca", "  PCA, same size"), ("raw_pixels", "  raw pixels"))
            if name in r]  # --baselines may leave one out
    print(text_table(["features", "dims", *(f"{p} acc/F1" for p in probes)], rows))


if __name__ == "__main__":
    run(main, parse_args())
