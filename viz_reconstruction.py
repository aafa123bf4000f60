"""Step 2: test images beside their reconstructions by the 2-d and the N-d model, and each model's
reconstruction error on the whole test set beside PCA at the same size.

    python viz_reconstruction.py --model_path output/model_latent_size_256.pth --test_data output/test_data.pth
    python viz_reconstruction.py            # after train.py: finds both models through output/test_data.pth

Writes to --output_dir: reconstruction_latent_size_{N}.png (originals, then each model's row and PCA's
of its size, each with its test MSE, the class name over each column) and
reconstruction_latent_size_{N}.json (MSE, PSNR, SSIM).
"""
from latentlab.cli import make_parser, progress, run, text_table
from latentlab.ranges import figure_images
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_batch_size


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "model_path", "test_data", "pca_baseline")
    g = p.add_argument_group("step")
    g.add_argument("--num_images", type=figure_images, default=8, help="test images in the figure (a seeded sample)")
    add_batch_size(g, "images per batch for the metrics")
    return p.parse_args(argv)


def main(args) -> dict:
    from pathlib import Path

    import torch

    from latentlab import caveats, image_grids
    from latentlab.store import files
    from latentlab.cli import UserError, memory_for, pick_device, seed_everything
    from latentlab.store.inputs import find_models, find_pca_baseline
    from latentlab.store.runs import claim
    from model.autoencoder import model_from_checkpoint
    from latentlab.analysis.inference import reconstruct_batches
    from latentlab.analysis.pca import pca_reconstruct_batches
    from latentlab.analysis.scores import reconstruction_scores

    device = pick_device(args.device)
    seed_everything(args.seed)
    data, data_path, models = find_models(args.model_path, args.test_data, args.output_dir, args.quiet)
    sizes = [m.latent_size for m in models]
    pca = find_pca_baseline(args.pca_baseline, data, data_path, sizes)
    images, labels, names = data["images"], data["labels"], data["class_names"]
    if args.num_images > len(images):
        raise UserError(f"--num_images {args.num_images} but the test data holds {len(images)} images; ask for fewer")
    main_model = models[-1]
    out = Path(args.output_dir)
    run = claim(out, (data_path, data), *models, by="viz_reconstruction.py")

    # the metrics: every test image, one batch at a time
    batches = -(-len(images) // args.batch_size)
    results = {}
    for m in models:
        k = m.latent_size
        model = model_from_checkpoint(m.ckpt, device)
        batch_scores = progress(reconstruct_batches(model, images, device, args.batch_size), total=batches,
                                desc=f"{k}-d model", quiet=args.quiet)
        with memory_for(f"batches of {args.batch_size} images", "--batch_size", device=device):
            ae = reconstruction_scores(batch_scores)
            pk = min(k, pca["components"].shape[0])
            base = reconstruction_scores(pca_reconstruct_batches(images, pca["mean"], pca["components"], pk,
                                                                 args.batch_size))
        results[str(k)] = {"model": m.label, "model_path": str(m.path), "family": m.family, "autoencoder": ae,
                           "pca": {**base, "components": pk}, "mse_vs_pca": ae["mse"] / base["mse"] if base["mse"] > 0 else None}
    # the figure: the same seeded sample of test images in every row, each row's test MSE beside it
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.num_images].sort().values
    shown = images[pick]
    rows = [("original", next(pca_reconstruct_batches(shown, pca["mean"], pca["components"], 1))[0])]
    for m in models:  # each model's row, then PCA's of the same size
        r = results[str(m.latent_size)]
        model = model_from_checkpoint(m.ckpt, device)
        rows.append((f"{m.latent_size}-d {m.family}\ntest MSE {r['autoencoder']['mse']:.4f}",
                     next(reconstruct_batches(model, shown, device))[1]))
        rows.append((f"PCA, {r['pca']['components']} components\ntest MSE {r['pca']['mse']:.4f}",
                     next(pca_reconstruct_batches(shown, pca["mean"], pca["components"], r["pca"]["components"]))[1]))
    title = f"test images and their reconstructions: {main_model.label}\n(MSE over all {len(images)} test images)"
    fig = image_grids.image_rows(rows, title, col_titles=[names[int(c)] for c in labels[pick]])
    figure = files.save_figure(fig, out / f"reconstruction_latent_size_{main_model.latent_size}.png")
    found = caveats.of_models({m.latent_size: caveats.training_caveats(
        m.ckpt.get("test_metrics", {}).get("optimiser_steps"), results[str(m.latent_size)]["mse_vs_pca"]) for m in models})
    metrics = {"step": "reconstruction", "run": run, "dataset": data["dataset"], "test_data": str(data_path),
               "test_images": len(images), "figure": str(figure), "models": results, "caveats": found,
               "notes": "MSE over every pixel value in [0, 1]; PSNR = 10 log10(1 / MSE); SSIM = mean per-image SSIM "
                        "(7x7 window, as skimage); PCA fit on the training split, not clipped"}
    path = files.save_json(metrics, out / f"reconstruction_latent_size_{main_model.latent_size}.json")
    print_table(results, len(images))
    caveats.print_caveats(found)
    print(f"wrote {figure} and {path}")
    return metrics


def print_table(results: dict, n: int) -> None:
    print(text_table([f"on {n} test images", "MSE", "PSNR dB", "SSIM"], [
        [name, f"{s['mse']:.5f}", f"{s['psnr']:.2f}", f"{s['ssim']:.4f}"] for r in results.values()
        for name, s in ((r["model"], r["autoencoder"]), (f"PCA, {r['pca']['components']} components", r["pca"]))]))


if __name__ == "__main__":
    run(main, parse_args())
