"""Step 5: k-means on the latents of the 2-d and the N-d model, scored against the classes.

    python viz_kmeans_latent_space.py --latent_space output/latent_space_size_256.npy --num_clusters 43
    python viz_kmeans_latent_space.py                   # after encode_latent_space.py: one cluster per class
    python viz_kmeans_latent_space.py --space umap      # cluster a UMAP reduction (as N2D does)

k-means (k-means++, 10 restarts, seeded) runs on the latents themselves (--space latent) or on
their --umap_dims-d UMAP reduction (--space umap, cached with the projections of
viz_latent_space.py, so the 2-D UMAP it drew is reused). Scores: NMI, ARI and purity against the
classes, and the silhouette in the space clustered. Writes to --output_dir:
kmeans_{space}_space_latent_size_{k}.png per model (the clusters in a 2-D view with their
centroids, and a heatmap of clusters against classes) and kmeans_{space}_space_latent_size_{N}.json
(the scores, and each latent's cluster in the order of its latents file, which the explorer shows).
"""
from latentlab.cli import make_parser, run, text_table
from latentlab.ranges import at_least_two, width
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_vis_type


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space")
    g = p.add_argument_group("step")
    g.add_argument("--num_clusters", type=at_least_two, default=None,
                   help="k, from 2 to the number of samples (default: the number of classes)")
    g.add_argument("--space", default="latent", choices=("latent", "umap"),
                   help="cluster the latents themselves, or their UMAP reduction")
    g.add_argument("--umap_dims", type=width, default=2,
                   help="--space umap: dimensions of the UMAP reduction (N2D uses 10 for 10 classes)")
    add_vis_type(g, "how a space of more than 2 dimensions is drawn in 2-D for the figure")
    return p.parse_args(argv)


def cluster_and_draw(lat, args, k: int, out, cache) -> tuple[dict, list]:
    """k-means on one latent space (or its UMAP), scored against the classes and drawn: (its JSON row,
    each latent's cluster)."""
    from latentlab import plots
    from latentlab.store import files
    from latentlab.analysis.scores import kmeans_scores
    from latentlab.analysis.projection import METHOD_NAMES, axis_labels, clustering_space, view_2d

    feats, info = clustering_space(lat.z, args.space, args.umap_dims, args.seed, cache, args.quiet)
    space = f"the {lat.latent_size}-d latent space" if info is None else f"its {args.umap_dims}-d UMAP"
    detail = None if info is None else {"params": info["params"], "cache": info["path"], "cached": info["cached"]}
    scores, clusters, _ = kmeans_scores(feats, lat.labels, k, args.seed)
    if feats.shape[1] <= 2:  # the clustered space is the view: centroids are exact
        xy, view, drawn = view_2d(feats, "pca")[0], space, None
        xlabel, ylabel = ("UMAP 1", "UMAP 2") if args.space == "umap" else axis_labels(None)
    else:
        xy, vinfo = view_2d(lat.z, args.vis_type, args.seed, cache, args.quiet)
        view, (xlabel, ylabel) = f"a {METHOD_NAMES[args.vis_type]} view of the latents", axis_labels(vinfo)
        drawn = {"method": args.vis_type, "cache": vinfo["path"], "cached": vinfo["cached"]}
    title = (f"k-means on {lat.label}, clustered in {space}\n"
             f"against the classes: NMI {scores['nmi']:.3f}, ARI {scores['ari']:.3f}, purity {scores['purity']:.3f}")
    fig = plots.kmeans_figure(xy, clusters, lat.labels, lat.class_names, title, xlabel, ylabel, view)
    figure = files.save_figure(fig, out / f"kmeans_{args.space}_space_latent_size_{lat.latent_size}.png")
    return {"model": lat.label, "latents": str(lat.path), "samples": len(lat.z), "latents_sha256": lat.meta["npy_sha256"],
            "clustered_in": space, **scores, "umap": detail, "view": drawn, "figure": str(figure)}, clusters


def main(args) -> dict:
    from pathlib import Path

    import numpy as np

    from latentlab import caveats
    from latentlab.store import files
    from latentlab.cli import UserError, memory_for, seed_everything, worded
    from latentlab.store.inputs import find_latents, say
    from latentlab.store.runs import claim
    from latentlab.analysis.scores import SILHOUETTE_MAX_SAMPLES

    seed_everything(args.seed)
    out, cache = Path(args.output_dir), Path(args.output_dir) / "cache"
    latents = find_latents(args.latent_space, args.output_dir, quiet=args.quiet)
    main_l = latents[-1]
    n = len(main_l.z)
    k = args.num_clusters or len(main_l.class_names)
    if k > n:
        if args.num_clusters:
            raise UserError(f"--num_clusters {k} but there are only {n} latents; choose 2..{n} "
                            f"(or encode more with encode_latent_space.py --num_samples)")
        say(args.quiet, f"note: {len(main_l.class_names)} classes but only {n} latents: using {n} clusters")
        k = n
    if args.space == "umap" and args.umap_dims > n - 2:
        raise UserError(f"--umap_dims {args.umap_dims} needs at least {args.umap_dims + 2} latents, there are {n}; "
                        f"lower --umap_dims or encode more samples")
    run = claim(out, *latents, by="viz_kmeans_latent_space.py")
    results, assigned = {}, {}
    with worded("encode more with encode_latent_space.py --num_samples"), \
            memory_for(f"k-means on {n} latents", "the latents' --num_samples (encode_latent_space.py)"):
        for lat in latents:
            results[str(lat.latent_size)], assigned[str(lat.latent_size)] = cluster_and_draw(lat, args, k, out, cache)
    found = caveats.of_latents(latents) + caveats.per_class_caveat(np.unique(main_l.labels, return_counts=True)[1],
                                     "the test latents scored (NMI, ARI, purity) hold")
    metrics = {"step": "kmeans", "run": run, "dataset": main_l.dataset, "space": args.space, "num_clusters": k,
               "classes": len(main_l.class_names), "models": results, "caveats": found,
               "clusters": {"by_latent_size": assigned},
               "notes": f"NMI, ARI: sklearn normalized_mutual_info_score / adjusted_rand_score of clusters vs classes; "
                        f"purity: share of samples in their cluster's majority class; silhouette: in the space "
                        f"clustered (Euclidean, at most {SILHOUETTE_MAX_SAMPLES} samples)"}
    path = files.save_json(metrics, out / f"kmeans_{args.space}_space_latent_size_{main_l.latent_size}.json")
    print(text_table([f"k-means, {k} clusters", "NMI", "ARI", "purity", "silhouette"], [
        [r["model"], f"{r['nmi']:.3f}", f"{r['ari']:.3f}", f"{r['purity']:.3f}",
         "-" if r["silhouette"] is None else f"{r['silhouette']:.3f}"] for r in results.values()]))
    caveats.print_caveats(found)
    print(f"wrote {', '.join(r['figure'] for r in results.values())} and {path}")
    return metrics


if __name__ == "__main__":
    run(main, parse_args())
