"""Step 4: both latent spaces side by side: the 2-d one as it is, the N-d one projected to 2-D.

    python viz_latent_space.py --latent_space output/latent_space_size_256.npy --vis_type umap
    python viz_latent_space.py                  # after encode_latent_space.py: the latents in output/
    python viz_latent_space.py --vis_type tsne

Points are coloured by class. Also scores each 2-D picture: the projection's trustworthiness and
continuity at 5, 10 and 20 neighbours, its global score (the Pearson correlation of the pairwise
distances among 1,000 seeded points, latents against picture), and the 10-nearest-neighbour
accuracy in 2-D (stratified 5-fold cross-validation, seeded). Projections are cached in
--output_dir/cache/ by the content of the latents and the parameters.
Writes to --output_dir: projection_{vis_type}_latent_size_{N}.png and .json.
"""
from latentlab.cli import make_parser, run
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_folds, add_vis_type


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space")
    g = p.add_argument_group("step")
    add_vis_type(g)
    add_folds(g, "folds of the cross-validated 10-NN accuracy")
    return p.parse_args(argv)


def view_and_score(lat, args, cache):
    """(the metrics row, the figure panel) of one latent space: its 2-D view, k-NN in the view and,
    for a projection, trustworthiness and k-NN in the latents themselves."""
    from latentlab.analysis.probes import KNN_K, probe_scores
    from latentlab.analysis.projection import METHOD_NAMES, axis_labels, view_2d
    from latentlab.analysis.scores import projection_structure

    xy, info = view_2d(lat.z, args.vis_type, args.seed, cache, args.quiet)
    knn = probe_scores(xy, lat.labels, ("knn",), args.folds, args.seed, KNN_K, cache_dir=cache)["knn"]
    method = METHOD_NAMES[args.vis_type]
    row = {"model": lat.label, "latents": str(lat.path), "samples": len(lat.z),
           "drawn": "as is" if info is None else f"{method} projection",
           f"knn{KNN_K}_accuracy_2d": knn["accuracy"], "knn_k": knn["k"]}
    if info is not None:
        row.update(projection_structure(lat.z, xy, seed=args.seed))
        full = probe_scores(lat.z, lat.labels, ("knn",), args.folds, args.seed, KNN_K, cache_dir=cache)["knn"]
        row[f"knn{KNN_K}_accuracy_full"] = full["accuracy"]
        row["projection"] = {"params": info["params"], "cache": info["path"], "cached": info["cached"]}
    xlabel, ylabel = axis_labels(info)
    how = "as it is" if info is None else f"{method} of the {lat.latent_size}-d latents"
    scores = f"{KNN_K}-NN accuracy {knn['accuracy']:.3f}" if info is None else (
        f"trustworthiness {row['trustworthiness']:.3f}, continuity {row['continuity']:.3f}, global score "
        f"{row['global_score']:.3f};\n{KNN_K}-NN accuracy {knn['accuracy']:.3f} in 2-D, "
        f"{row[f'knn{KNN_K}_accuracy_full']:.3f} in {lat.latent_size}-d")
    return row, {"xy": xy, "labels": lat.labels, "title": f"{lat.label}\n{how}\n{scores}", "xlabel": xlabel,
                 "ylabel": ylabel}


def main(args) -> dict:
    from pathlib import Path

    import numpy as np

    from latentlab import caveats, plots
    from latentlab.store import files
    from latentlab.cli import memory_for, seed_everything, worded
    from latentlab.store.inputs import find_latents
    from latentlab.store.runs import claim
    from latentlab.analysis.probes import KNN_K
    from latentlab.analysis.scores import GLOBAL_POINTS, SILHOUETTE_MAX_SAMPLES, STRUCTURE_KS, TRUST_K

    seed_everything(args.seed)
    out = Path(args.output_dir)
    latents = find_latents(args.latent_space, args.output_dir, quiet=args.quiet)
    main_l = latents[-1]
    run = claim(out, *latents, by="viz_latent_space.py")
    with worded("encode more with encode_latent_space.py --num_samples"), \
            memory_for(f"the projections of {len(main_l.z)} latents",
                       "the latents' --num_samples (encode_latent_space.py)"):
        views = [view_and_score(lat, args, out / "cache") for lat in latents]
    results = {str(lat.latent_size): row for lat, (row, _) in zip(latents, views)}
    panels = [panel for _, panel in views]
    title = f"latent spaces on {main_l.dataset} test images ({len(main_l.z)} samples), coloured by class"
    fig = plots.latent_scatter(panels, main_l.class_names, title)
    name = f"projection_{args.vis_type}_latent_size_{main_l.latent_size}"
    figure = files.save_figure(fig, out / f"{name}.png")
    found = caveats.of_latents(latents) + caveats.per_class_caveat(np.unique(main_l.labels, return_counts=True)[1],
                                     f"the test latents scored ({KNN_K}-NN accuracy, trustworthiness) hold")
    metrics = {"step": "latent_space", "run": run, "dataset": main_l.dataset, "vis_type": args.vis_type, "figure": str(figure),
               "models": results, "caveats": found,
               "notes": f"trustworthiness: sklearn.manifold.trustworthiness ({TRUST_K} neighbours) of the 2-D projection, "
                        f"continuity the same with the spaces' roles swapped (Venna & Kaski 2006), both also at "
                        f"{', '.join(map(str, STRUCTURE_KS))} neighbours (trustworthiness_k, continuity_k), on a seeded "
                        f"sample of at most {SILHOUETTE_MAX_SAMPLES}; global_score: Pearson r of the pairwise distances among "
                        f"{GLOBAL_POINTS} seeded latents and their projections (Sainburg et al. 2021); "
                        f"knn{KNN_K}_accuracy: {KNN_K}-NN on the coordinates as they are, stratified {args.folds}-fold "
                        f"cross-validation (shuffle seeded with {args.seed}), pooled out-of-fold accuracy"}
    path = files.save_json(metrics, out / f"{name}.json")
    for k, r in results.items():
        extra = "" if "trustworthiness" not in r else (
            f", trustworthiness / continuity at k = {', '.join(r['continuity_k'])}: "
            + ", ".join(f"{r['trustworthiness_k'][j]:.3f}/{c:.3f}" for j, c in r["continuity_k"].items())
            + f", global score {r['global_score']:.3f}, {KNN_K}-NN accuracy in {k}-d {r[f'knn{KNN_K}_accuracy_full']:.3f}")
        print(f"{r['model']} ({r['drawn']}): {KNN_K}-NN accuracy in 2-D {r[f'knn{KNN_K}_accuracy_2d']:.3f}{extra}")
    caveats.print_caveats(found)
    print(f"wrote {figure} and {path}")
    return metrics


if __name__ == "__main__":
    run(main, parse_args())
