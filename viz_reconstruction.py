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


def scores_of(m, images, pca, args, device) -> dict:
    """One model's MSE, PSNR and SSIM on every test image, one batch at a time, beside PCA's at its size."""
    from latentlab.cli import memory_for
    from latentlab.analysis.inference import reconstruct_batches
    from latentlab.analysis.pca import pca_reconstruct_batches
    from latentlab.analysis.scores import reconstruction_scores
    from model.autoencoder import model_from_checkpoint

    k = m.latent_size
    batch_scores = progress(reconstruct_batches(model_from_checkpoint(m.ckpt, device), images, device, args.batch_size),
                            total=-(-len(images) // args.batch_size), desc=f"{k}-d model", quiet=args.quiet)
    with memory_for(f"batches of {args.batch_size} images", "--batch_size", device=device):
        ae = reconstruction_scores(batch_scores)
        pk = min(k, pca["components"].shape[0])
        base = reconstruction_scores(pca_reconstruct_batches(images, pca["mean"], pca["components"], pk, args.batch_size))
    return {"model": m.label, "model_path": str(m.path), "family": m.family, "autoencoder": ae,
            "pca": {**base, "components": pk}, "mse_vs_pca": ae["mse"] / base["mse"] if base["mse"] > 0 else None}


def draw(models, results, data, pca, args, device, path):
    """The same seeded sample of test images in every row: the originals, then each model's
    reconstructions and PCA's of the same size, each row's test MSE beside it."""
    import torch

    from latentlab import image_grids
    from latentlab.store import files
    from latentlab.analysis.inference import reconstruct_batches
    from latentlab.analysis.pca import pca_reconstruct_batches
    from model.autoencoder import model_from_checkpoint

    images, labels, names = data["images"], data["labels"], data["class_names"]
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.num_images].sort().values
    shown = images[pick]
    rows = [("original", next(pca_reconstruct_batches(shown, pca["mean"], pca["components"], 1))[0])]
    for m in models:
        r = results[str(m.latent_size)]
        rows.append((f"{m.latent_size}-d {m.family}\ntest MSE {r['autoencoder']['mse']:.4f}",
                     next(reconstruct_batches(model_from_checkpoint(m.ckpt, device), shown, device))[1]))
        rows.append((f"PCA, {r['pca']['components']} components\ntest MSE {r['pca']['mse']:.4f}",
                     next(pca_reconstruct_batches(shown, pca["mean"], pca["components"], r["pca"]["components"]))[1]))
    title = f"test images and their reconstructions: {models[-1].label}\n(MSE over all {len(images)} test images)"
    return files.save_figure(image_grids.image_rows(rows, title, col_titles=[names[int(c)] for c in labels[pick]]), path)


def main(args) -> dict:
    from pathlib import Path

    from latentlab import caveats
    from latentlab.store import files
    from latentlab.cli import UserError, pick_device, seed_everything
    from latentlab.store.inputs import find_models, find_pca_baseline
    from latentlab.store.runs import claim
    from latentlab.analysis.scores import SSIM_WINDOW

    device = pick_device(args.device)
    seed_everything(args.seed)
    data, data_path, models = find_models(args.model_path, args.test_data, args.output_dir, args.quiet)
    pca = find_pca_baseline(args.pca_baseline, data, data_path, [m.latent_size for m in models])
    images = data["images"]
    if args.num_images > len(images):
        raise UserError(f"--num_images {args.num_images} but the test data holds {len(images)} images; ask for fewer")
    main_model = models[-1]
    out = Path(args.output_dir)
    run = claim(out, (data_path, data), *models, by="viz_reconstruction.py")

    results = {str(m.latent_size): scores_of(m, images, pca, args, device) for m in models}
    figure = draw(models, results, data, pca, args, device, out / f"reconstruction_latent_size_{main_model.latent_size}.png")
    found = caveats.of_models({m.latent_size: caveats.training_caveats(
        m.ckpt.get("test_metrics", {}).get("optimiser_steps"), results[str(m.latent_size)]["mse_vs_pca"]) for m in models})
    metrics = {"step": "reconstruction", "run": run, "dataset": data["dataset"], "test_data": str(data_path),
               "test_images": len(images), "figure": str(figure), "models": results, "caveats": found,
               "notes": f"MSE over every pixel value in [0, 1]; PSNR = 10 log10(1 / MSE); SSIM = mean per-image SSIM "
                        f"({SSIM_WINDOW}x{SSIM_WINDOW} window, as skimage); PCA fit on the training split, not clipped"}
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
