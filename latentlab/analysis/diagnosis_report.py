"""Step 8's report: its figures, the notes its JSON gives on each method, and its printed tables."""
from latentlab.cli import text_table


def draw(found, pairs, all_at, args, main_l, out, worst_rows, error_rows) -> dict:
    """The figures, saved; {what: path}: the probe's errors only where step 6's predictions were found."""
    from latentlab import diagnosis_figures as df
    from latentlab.analysis.diagnosis import ACTIVE_THRESHOLD
    from latentlab.analysis.label_efficiency import EFFICIENCY_KNN_K
    from latentlab.analysis.robustness import ROBUST_KNN_K
    from latentlab.store import files
    styles, n = df.space_styles(pairs), len(main_l.z)
    name = f"latent_size_{main_l.latent_size}"
    units = found["units"]
    active = ", ".join(f"{k}: {u['active_units']} of {u['units']}" for k, u in units.items())
    knn = f"knn{ROBUST_KNN_K}_accuracy"
    eff = found["label_efficiency"]
    fewest = str(min(args.labels_per_class))
    best = max(eff, key=lambda s: eff[s]["linear"][fewest]["mean"])
    probe_names = {"linear": "logistic regression", "knn": f"{EFFICIENCY_KNN_K}-NN"}
    figs = {
        "units": df.units_figure(units, ACTIVE_THRESHOLD, f"units in use on {n} {main_l.dataset} test images; active "
                                                           f"units {active}"),
        "label_efficiency": df.efficiency_figure(
            eff, all_at, styles, probe_names, f"label efficiency on {main_l.dataset}: from {fewest} label(s) per class "
            f"the most accurate logistic regression is {best}'s ({eff[best]['linear'][fewest]['mean']:.3f})"),
        "robustness": df.robustness_figure(found["robustness"], args.noise_levels, styles, knn,
                                           noise_title(found["robustness"], pairs[-1], args.noise_levels, knn, n,
                                                       main_l.dataset)),
    }
    figs["worst_reconstructions"] = df.worst_figure(
        worst_rows, list(found["units"]), f"per class, the test images each model reconstructs worst, beside both "
                                          f"reconstructions (of {n} {main_l.dataset} test images)")
    if error_rows:
        probe = next(iter(found["probe_errors"].values()))["probe"]
        figs["probe_errors"] = df.errors_figure(
            error_rows, f"per class, the test images the {probe} probe (step 6's best) got wrong with the highest "
                        f"probability\nthe class it said above each (of {n} {main_l.dataset} test images)")
    short = {"units": "units", "label_efficiency": "labels", "robustness": "noise", "worst_reconstructions": "worst",
             "probe_errors": "errors"}
    return {k: str(files.save_figure(f, out / f"diagnosis_{short[k]}_{name}.png")) for k, f in figs.items()}


def noise_title(robust: dict, pair: tuple, levels, knn: str, n: int, dataset: str) -> str:
    """The robustness figure's title: the N-d model's and its PCA's k-NN accuracy at the lowest and
    the highest noise."""
    lo, hi = levels.index(min(levels)), levels.index(max(levels))
    change = ", ".join(f"{s} {robust[s][knn][lo]:.3f} to {robust[s][knn][hi]:.3f}" for s in pair)
    return (f"robustness to input noise on {n} {dataset} test images; {knn[3:].split('_')[0]}-NN accuracy from noise "
            f"std {levels[lo]:g} to {levels[hi]:g}: {change}")


def method_notes(n: int, how: str) -> str:
    from latentlab.analysis import diagnosis as d, label_efficiency as le
    from latentlab.analysis.robustness import ROBUST_KNN_K
    return (f"active units: variance over the test images of each unit's code (a VAE's posterior mean) above "
            f"{d.ACTIVE_THRESHOLD:g} (Burda et al. 2016); on a sphere the units share a variance budget of about N, "
            f"read the same way; VAE: collapsed units have a mean KL below {d.COLLAPSED_KL:g} nats. Intrinsic "
            f"dimension: scikit-dimension TwoNN and MLE (defaults) on a seeded sample of "
            f"{min(n, d.ID_MAX_SAMPLES)} of the {n} images (duplicates dropped); components_for_variance: PCA of all "
            f"{n}. Agreement: linear CKA on all {n}; {d.OVERLAP_K}-NN overlap on the same seeded sample. Label "
            f"efficiency: logistic regression and {le.EFFICIENCY_KNN_K}-NN (n-NN below {le.EFFICIENCY_KNN_K} "
            f"per class) fit on n labelled images per class {how}. Robustness: seeded Gaussian noise on the "
            f"input, not clipped; MSE against the clean image; {ROBUST_KNN_K}-NN of each fold's noisy codes among "
            f"the clean codes of the other folds")


def print_tables(found: dict, sizes, levels, n: int) -> None:
    units, structure = found["units"], found["structure"]
    print(text_table([f"on {n} test images", "active units", "TwoNN", "MLE", "PCs 90%", "PCs 95%"], [
        [s, f"{units[s]['active_units']}/{units[s]['units']}" + (
            f" ({units[s]['collapsed_units']} collapsed)" if "collapsed_units" in units[s] else "") if s in units else "",
         f"{r['twonn']:.1f}", f"{r['mle']:.1f}", *map(str, r["components_for_variance"].values())]
        for s, r in structure.items()]))
    print(text_table(["agreement", "linear CKA", "10-NN overlap"],
                     [[pair, f"{r['cka']:.3f}", f"{r['knn10_overlap']:.3f}"] for pair, r in found["agreement"].items()]))
    eff = found["label_efficiency"]
    cols = [*map(str, sizes), "all"]
    print(text_table(["test accuracy", *(f"{c} per class" for c in cols)], [
        [f"{s}, {probe}", *(f"{curve[c]['mean']:.3f}±{curve[c]['sd']:.3f}" for c in cols)]
        for s, probes in eff.items() for probe, curve in probes.items()]))
    rob = found["robustness"]
    print(text_table(["noise std", *(f"{v:g}" for v in levels)], [
        [f"{s}, {metric.split('_')[0]}", *(f"{v:.4f}" if metric == "mse" else f"{v:.3f}" for v in r[metric])]
        for s, r in rob.items() for metric in r]))
