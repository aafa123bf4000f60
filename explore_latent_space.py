"""The interactive explorer: a page of both latent spaces, offline, no server.

    python explore_latent_space.py                      # after encode_latent_space.py: the latents in output/
    python explore_latent_space.py --vis_type tsne --color_csv my_scores.csv

Left, the 2-d latents as they are; right, the N-d latents projected to 2-D by --vis_type (the same
projection and cache as viz_latent_space.py). Every encoded image is a point, test and training
splits both when encode_latent_space.py --split train has run (a split menu picks one), up to
--max_points (a seeded sample above it). Hover a point for its image, both models'
reconstructions, its class, index, k-means cluster (step 5), classifier prediction (step 6),
reconstruction errors and "neighbours kept". Click a point to list its 8 nearest neighbours in the
N-d latents and in the picture, marked in both panels. Search by class, index or file name. Colour
by class, cluster, right / wrong, reconstruction error, neighbours kept or a column of --color_csv;
a selection greys out the rest, lists its thumbnails and exports as CSV. Moving over the left panel
shows the 2-d model's decoding of the nearest cell of a --grid_size x --grid_size grid.
Writes to --output_dir: explorer_latent_size_{N}.html, and the images it shows in the folder
explorer_latent_size_{N}_tiles_{hash}/ beside it (--self_contained: inside the page).
"""
import io

from latentlab.cli import make_parser, run
from latentlab.ranges import grid_side, positive_int
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_batch_size, add_vis_type


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space", "model_path", "test_data")
    g = p.add_argument_group("step")
    add_vis_type(g)
    g.add_argument("--max_points", type=positive_int, default=100_000,
                   help="draw at most this many latents (a seeded sample above it)")
    g.add_argument("--self_contained", action="store_true",
                   help="put the images inside the page (one file to send; slower to open) instead of a folder beside it")
    g.add_argument("--color_csv", metavar="PATH",
                   help="a CSV with a column index (and split: test or train), and numeric columns to colour by")
    g.add_argument("--grid_size", type=grid_side, default=40,
                   help="decodings per side of the grid shown under the cursor")
    add_batch_size(g, "images per batch when decoding")
    return p.parse_args(argv)


def load_inputs(args, out, device) -> tuple:
    """(test data, [2-d, N-d checkpoint], {latent size: model on device}, [2-d latents, N-d latents]): the inputs, checked to
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
    return data, models, nets, latents


def training_part(latents) -> list:
    """[("train", 2-d latents, N-d latents, training images)] when both training splits are encoded, else []."""
    from latentlab.store.inputs import training_images, training_pair
    trains = training_pair(latents, "the explorer", "remove it")
    if trains is None:
        return []
    return [("train", *trains, training_images(trains))]


def found_by_steps(out, latents) -> dict:
    """What steps 5 and 6 wrote, by model position (0: 2-d, 1: N-d), and their notes."""
    from latentlab.store import step_results
    clusters, notes = step_results.step5_clusters(out, latents)
    preds, more = step_results.step6_predictions(out, latents)
    sizes = [lat.latent_size for lat in latents]
    return {"clusters": {sizes.index(k): c for k, c in clusters.items()},
            "preds": {sizes.index(k): p for k, p in preds.items()}, "notes": notes + more}


def main(args) -> dict:
    from pathlib import Path

    import torch

    from latentlab.analysis import explorer, explorer_page as page
    from latentlab.analysis.explorer_film import film_frames
    from latentlab.store import atomic, files
    from latentlab.cli import pick_device, seed_everything
    from latentlab.generate.sampling import decode_latents, manifold_grid
    from latentlab.store.inputs import say
    from latentlab.analysis.projection import METHOD_NAMES, axis_labels

    seed_everything(args.seed)
    device = pick_device(args.device)
    out = atomic.ensure_writable(Path(args.output_dir))
    data, models, nets, latents = load_inputs(args, out, device)
    two, big = latents
    parts = [("test", two, big, data["images"])] + training_part(latents)
    points, total = explorer.gather(parts, args.max_points, args.seed)
    extra = explorer.read_color_csv(args.color_csv, points) if args.color_csv else {}
    found = found_by_steps(out, latents)
    xy, info = place_points(args, out, points, found)
    grid, xs, ys = manifold_grid(torch.from_numpy(two.z), args.grid_size)
    decoded = decode_latents(nets[2], grid, device, args.batch_size)

    model_names = ("2-d", f"{big.latent_size}-d")
    frames = film_frames([m.ckpt.get("record") for m in models])
    num_epochs = models[-1].ckpt["train"]["num_epochs"]
    stem = f"explorer_latent_size_{big.latent_size}"
    tiles, folder, found["errors"] = image_files(args, out, stem, points, models, nets, device)
    columns, colorings = explorer.point_columns(points, xy, big.class_names, model_names, {**found, "extra": extra})
    grid_sheet = {"grid_0.jpg": page.encode_sheet(page.to_u8(decoded), args.grid_size, lossy=True)}
    split_names = " and ".join(points.splits)
    drawn = (f"all {total} encoded {split_names} images drawn" if len(points.labels) == total else
             f"{len(points.labels)} of {total} encoded {split_names} images drawn (a sample seeded with {args.seed}; "
             f"--max_points)")
    info_js = {"classes": [str(c) for c in big.class_names], "splits": points.splits, "files": points.files,
               "models": list(model_names), "k": explorer.NEIGHBOURS_K, "clusters": bool(found["clusters"]),
               "probe": next((p for _, p, _ in found["preds"].values()), None)}
    html = page.build_page(
        title=f"latent explorer: {big.label}", subtitle=f"{drawn}. " + " ".join(n + "." for n in found["notes"]),
        columns=columns, info=info_js, image_hw=tuple(points.images.shape[2:]),
        grid={"cols": args.grid_size, "xs": xs.tolist(), "ys": ys.tolist()}, colorings=colorings,
        panel_titles=(f"{two.label}: the latents as they are", f"{big.label}: {METHOD_NAMES[args.vis_type]} of the latents"),
        axis_labels=(axis_labels(None), axis_labels(info)), csv_name=f"explorer_selection_latent_size_{big.latent_size}.csv",
        tiles_at=folder, embedded={**grid_sheet, **(tiles if folder is None else {})},
        film=None if frames is None else (frames, big.class_names, model_names, num_epochs))
    path = files.save_text(html, out / f"{stem}.html")
    page.remove_other_tile_folders(out, stem, keep=folder)
    size = len(html) + sum(map(len, tiles.values())) * (folder is not None)
    print(f"wrote {path} ({len(html) / 1e6:.1f} MB" + (f"; its images {sum(map(len, tiles.values())) / 1e6:.1f} MB in "
          f"{folder}/" if folder else "") + f"; {drawn})")
    for n in found["notes"]:
        say(args.quiet, f"note: {n}")
    return {"path": str(path), "points": len(points.labels), "total": total, "grid_size": args.grid_size,
            "notes": found["notes"], "kmeans": sorted(latents[m].latent_size for m in found["clusters"]), "tiles": folder,
            "bytes": size, "predictions": {latents[m].latent_size: p for m, (_, p, _) in found["preds"].items()},
            "colorings": {c["name"]: c["column"] for c in colorings}, "splits": points.splits}


def place_points(args, out, points, found: dict) -> tuple:
    """(the projection of the points' N-d latents, its info), through the cache; adds to found the
    N-d neighbours and the share of them the picture keeps."""
    from latentlab.analysis import explorer
    from latentlab.analysis.projection import view_2d
    from latentlab.cli import memory_for, worded
    k, cache = explorer.NEIGHBOURS_K, out / "cache"
    with worded("encode more with encode_latent_space.py --num_samples"), \
            memory_for(f"the projection of {len(points.zn)} latents", "--max_points"):
        xy, info = view_2d(points.zn, args.vis_type, args.seed, cache, args.quiet)
        found["neighbours"] = explorer.neighbours(points.zn, k, cache)
        found["kept"] = explorer.kept_share(found["neighbours"][0], explorer.neighbours(xy, k, cache)[0])
    return xy, info


def image_files(args, out, stem: str, points, models, nets, device) -> tuple[dict, str | None, list]:
    """The tile files ({name: bytes}) of the points' images and both models' reconstructions, the
    folder beside the page that holds them (None: --self_contained) and each model's error per
    point. The folder is named by what decides its content (images, latents, checkpoints): one
    already there is read, not made again."""
    import hashlib

    import numpy as np

    from latentlab.analysis import explorer, explorer_page as page
    from latentlab.cli import memory_for
    from latentlab.store import atomic, files
    key = files.content_key({"tiles": page.TILE_FORMAT, "models": [hashlib.sha256(m.path.read_bytes()).hexdigest()
                                                                   for m in models]},
                            points.z2, points.zn, points.images.numpy())
    folder = out / f"{stem}_tiles_{key[:16]}"
    made = {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}
    if "errors.npy" not in made:  # none yet (a folder is written whole or not at all)
        images, made = points.images, {"test": (page.tiles(points.images, lossy=False), False)}
        errors = []
        with memory_for(f"the reconstructions of {len(images)} images", "--max_points", 2 * images[0].numel() * len(images)):
            for m, z in enumerate((points.z2, points.zn)):
                rec, err = explorer.reconstructions(nets[models[m].latent_size], z, images, device, args.batch_size)
                made[f"rec{m}"] = (page.tiles(rec, lossy=True), True)
                errors.append(err)
        made = {**page.tile_files(made), "errors.npy": files.npy_bytes(np.stack(errors))}
    errors = list(np.load(io.BytesIO(made.pop("errors.npy")), allow_pickle=False))
    if args.self_contained:
        return made, None, errors
    return made, atomic.write_folder(folder, {**made, "errors.npy": files.npy_bytes(np.stack(errors))}).name, errors


if __name__ == "__main__":
    run(main, parse_args())
