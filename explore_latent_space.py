"""The interactive explorer: one self-contained HTML page of both latent spaces, offline, no server.

    python explore_latent_space.py                      # after encode_latent_space.py: the latents in output/
    python explore_latent_space.py --latent_space output/latent_space_size_256.npy --vis_type tsne

Left, the 2-d latents as they are; right, the N-d latents projected to 2-D by --vis_type (the same
projection and cache as viz_latent_space.py). Hover a point for its test image, both models'
reconstructions, class, test index, its k-means cluster (step 5) and its classifier's held-out
prediction (step 6), when those steps have run. A box or lasso selection in one panel lights the
same images in the other; it lists their thumbnails and exports as CSV. Colour by class, k-means
cluster or classifier right / wrong. Moving over the left panel shows the 2-d model's decoding of
the nearest cell of a --grid_size x --grid_size grid. Above --max_points latents, a seeded sample
is drawn, and the page says so.
Writes to --output_dir: explorer_latent_size_{N}.html.
"""
from latentlab.cli import make_parser, progress, run
from latentlab.ranges import grid_side, positive_int
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_batch_size, add_vis_type


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space", "model_path", "test_data")
    g = p.add_argument_group("step")
    add_vis_type(g)
    g.add_argument("--max_points", type=positive_int, default=20_000,
                   help="draw at most this many latents (a seeded sample above it)")
    g.add_argument("--grid_size", type=grid_side, default=40,
                   help="decodings per side of the grid shown under the cursor")
    add_batch_size(g, "images per batch when decoding")
    return p.parse_args(argv)


def load_inputs(args, out, device) -> tuple:
    """(test data, {latent size: model on device}, [2-d latents, N-d latents]): the inputs, checked to
    be of one training and encoded by its models; claims out for their run."""
    import numpy as np

    from latentlab.analysis.inference import encode_images
    from latentlab.cli import UserError
    from latentlab.store.latent_files import check_latents_match
    from latentlab.store.inputs import find_latents, find_models
    from latentlab.store.runs import claim
    from model.autoencoder import model_from_checkpoint

    data, data_path, models = find_models(args.model_path, args.test_data, out, args.quiet)
    latents = find_latents(args.latent_space, out, data, args.quiet)
    if len(models) < 2 or len(latents) < 2 or models[0].latent_size != 2:
        raise UserError("the explorer needs both models of a training (the 2-d one and the N-d one, N > 2) and both "
                        "latents: train with --latent_size N > 2, then run encode_latent_space.py")
    nets = {}
    for lat, m in zip(latents, models):
        check_latents_match(lat, data, data_path)
        if lat.latent_size != m.latent_size:
            raise UserError(f"{lat.path} holds latents of size {lat.latent_size} but {m.path} has latent size "
                            f"{m.latent_size}; pass the latents of this training")
        nets[m.latent_size] = model_from_checkpoint(m.ckpt, device)
        again = encode_images(nets[m.latent_size], data["images"][lat.indices[:16]], device)
        if not np.allclose(again, lat.z[:16], rtol=1e-3, atol=1e-3 * (np.abs(lat.z).max() + 1)):
            raise UserError(f"{lat.path} was not encoded by {m.path} (its latents differ from the model's); "
                            f"re-run encode_latent_space.py after this training")
    if not np.array_equal(latents[0].indices, latents[1].indices):
        raise UserError(f"{latents[0].path} and {latents[1].path} hold different test items; re-run encode_latent_space.py")
    claim(out, (data_path, data), *models, *latents, by="explore_latent_space.py")
    return data, nets, latents


def main(args) -> dict:
    from pathlib import Path

    import torch

    from latentlab.analysis import explorer
    from latentlab.store import atomic, files
    from latentlab.cli import memory_for, pick_device, seed_everything, worded
    from latentlab.generate.sampling import decode_latents, manifold_grid
    from latentlab.store.inputs import say
    from latentlab.analysis.projection import METHOD_NAMES, axis_labels, view_2d

    seed_everything(args.seed)
    device = pick_device(args.device)
    out = atomic.ensure_writable(Path(args.output_dir))
    data, nets, latents = load_inputs(args, out, device)
    two, big = latents
    with worded("encode more with encode_latent_space.py --num_samples"), \
            memory_for(f"the projection of {len(big.z)} latents", "the latents' --num_samples (encode_latent_space.py)"):
        xy, info = view_2d(big.z, args.vis_type, args.seed, out / "cache", args.quiet)
    clusters, notes = explorer.step5_clusters(out, latents)
    preds, more = explorer.step6_predictions(out, latents)
    notes += more

    total = len(big.z)
    rows = explorer.sample_points(total, args.max_points, args.seed)
    images = data["images"][big.indices[rows]]
    image_bytes = 4 * images[0].numel()  # one float32 decoding; the sprite sheets hold fewer bytes
    with memory_for(f"the reconstructions of {len(rows)} images", "--max_points", 2 * 2 * len(rows) * image_bytes):
        recon = {k: decode_latents(nets[k], torch.from_numpy(lat.z[rows]), device, args.batch_size)
                 for k, lat in zip((2, big.latent_size), latents)}
    grid, xs, ys = manifold_grid(torch.from_numpy(two.z), args.grid_size)
    with memory_for(f"{len(grid)} decodings of the grid", "--grid_size", 2 * len(grid) * image_bytes):
        decoded = decode_latents(nets[2], grid, device, args.batch_size)

    columns, colorings = explorer.point_data(two, big, rows, xy, clusters, preds)
    drawn = (f"all {total} encoded test images drawn" if len(rows) == total else
             f"{len(rows)} of {total} encoded test images drawn (a sample seeded with {args.seed}; --max_points)")
    sets = {"test": images, "rec2": recon[2], "recN": recon[big.latent_size], "grid": decoded}
    sheets = {name: explorer.sprite_sheet(sets[name], lossy=name != "test")
              for name in progress(sets, desc="sprite sheets", unit="sheet", quiet=args.quiet)}
    html = explorer.build_page(
        title=f"latent explorer: {big.label}", subtitle=f"{drawn}. " + " ".join(n + "." for n in notes),
        columns=columns, image_hw=tuple(images.shape[2:]), sheets={k: sheets[k] for k in ("test", "rec2", "recN")},
        grid={"sheet": sheets["grid"], "xs": xs.tolist(), "ys": ys.tolist()},
        colorings=colorings, panel_titles=(f"{two.label}: the latents as they are",
                                           f"{big.label}: {METHOD_NAMES[args.vis_type]} of the latents"),
        axis_labels=(axis_labels(None), axis_labels(info)), model_names=("2-d", f"{big.latent_size}-d"),
        csv_name=f"explorer_selection_latent_size_{big.latent_size}.csv")
    path = files.save_text(html, out / f"explorer_latent_size_{big.latent_size}.html")
    print(f"wrote {path} ({len(html) / 1e6:.1f} MB; {drawn})")
    for n in notes:
        say(args.quiet, f"note: {n}")
    return {"path": str(path), "points": len(rows), "total": total, "grid_size": args.grid_size, "notes": notes,
            "kmeans": sorted(clusters), "predictions": {k: p for k, (_, p) in preds.items()}, "colorings": list(colorings)}


if __name__ == "__main__":
    run(main, parse_args())
