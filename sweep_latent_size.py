"""Sweep: train each model family at each latent size and score what it learned, beside PCA.

    python sweep_latent_size.py --latent_sizes 2 8 32 128 --models conv vae --dataset fashion-mnist
    python sweep_latent_size.py --latent_sizes 2 4 --models mlp vae --dataset digits --num_epochs 2

Each (family, size) pair is one train.py run (the model of that size alone, no 2-d companion, with
train.py's defaults for every training flag not given) into <output_dir>/{family}_latent_size_{N}/,
then scored on the test split: MSE, PSNR and SSIM of the reconstructions of every test image; the
accuracy of a linear probe and of 10-NN, and the NMI of k-means (one cluster per class), on the
encoded test images (--num_samples), by stratified --folds cross-validation. PCA of each size is
scored the same way. Writes to --output_dir: {family}_latent_size_{N}/metrics.json (last, so a
finished pair is skipped by the next sweep; an interrupted training resumes), sweep_results.csv,
sweep_results.md, and sweep_metrics.png (one panel per metric against the latent size).
"""
import argparse

from latentlab.cli import at_least_two, count_or_all, make_parser, positive_int, run
from latentlab.settings import add_training_flags
from model.autoencoder import FAMILIES


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    p.set_defaults(output_dir="output/sweep")
    g = p.add_argument_group("sweep")
    g.add_argument("--latent_sizes", type=positive_int, nargs="+", default=[2, 8, 32, 128], help="bottleneck sizes")
    g.add_argument("--models", nargs="+", default=["conv", "vae"], choices=FAMILIES, help="network families")
    g.add_argument("--num_samples", type=count_or_all, default="all",
                   help="test images encoded for the probes and k-means, a seeded sample ('all': the whole test set)")
    g.add_argument("--folds", type=at_least_two, default=5, help="folds of the probes' stratified cross-validation")
    add_training_flags(p, per_run=False)
    return p.parse_args(argv)


def train_args(args, family: str, latent_size: int, folder) -> argparse.Namespace:
    """train.py's arguments for one pair: the sweep's training flags, the pair's family and size,
    and --resume so that an interrupted training continues."""
    return argparse.Namespace(**{**vars(args), "latent_size": latent_size, "model": family,
                                 "output_dir": str(folder), "resume": True})


def main(args) -> dict:
    import time
    from pathlib import Path

    from latentlab import files
    from latentlab.cli import pick_device, seed_everything
    from latentlab.experiment import run_training
    from latentlab.inputs import say
    from latentlab.sweep import (PCA, evaluate_model, evaluate_pca, family_name, load_finished, metrics_path, run_dir,
                                 settings_of, to_markdown, table_rows, write_outputs)

    t0 = time.perf_counter()
    out = files.ensure_writable(Path(args.output_dir))
    device = pick_device(args.device)
    sizes, families = sorted(set(args.latent_sizes)), list(dict.fromkeys(args.models))
    settings = settings_of(args)
    pairs = [(f, k) for k in sizes for f in [*families, PCA]]
    # every finished pair is checked against these flags before anything trains
    done = {p: load_finished(run_dir(out, *p), settings) for p in pairs}
    say(args.quiet, f"sweep of {len(pairs)} runs ({', '.join(map(family_name, families))} and PCA at latent sizes "
                    f"{', '.join(map(str, sizes))}): {sum(r is not None for r in done.values())} finished already")
    title = (f"latent-size sweep on {args.dataset}: {', '.join(map(family_name, families))} and PCA "
             f"({args.num_epochs} epochs per model, seed {args.seed})")
    def finished() -> list[dict]:  # table order: family by family, sizes ascending
        return [done[(f, k)] for f in [*families, PCA] for k in sizes if done[(f, k)] is not None]

    paths = {}
    for family, k in pairs:
        folder = run_dir(out, family, k)
        name = f"{family_name(family)}, latent size {k}"
        if done[(family, k)] is not None:
            say(args.quiet, f"{name}: finished, skipping ({metrics_path(folder)})")
            continue
        if family == PCA:  # from the baseline the first family's training of this size wrote
            rec = evaluate_pca(run_dir(out, families[0], k), k, settings)
        else:
            say(args.quiet, f"{name}: training into {folder}")
            run_training(train_args(args, family, k, folder), companion=False)
            seed_everything(args.seed)
            rec = evaluate_model(folder, settings, device)
        files.save_json(rec, metrics_path(folder))  # last: the pair is finished
        done[(family, k)] = rec
        m = rec["metrics"]
        say(args.quiet, f"{name}: MSE {m['test_mse']:.4f}, PSNR {m['test_psnr']:.2f} dB, SSIM {m['test_ssim']:.3f}, "
                        f"linear probe {m['linear_probe']:.3f}, kNN {m['knn']:.3f}, NMI {m['kmeans_nmi']:.3f}")
        paths = write_outputs(finished(), out, title)
    if not paths:  # every pair was finished already: the table and figure of exactly this sweep
        paths = write_outputs(finished(), out, title)
    rows = table_rows(finished())
    if not args.quiet:
        print(to_markdown(rows), end="")
        say(False, f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, **{k: str(p) for k, p in paths.items()}}


if __name__ == "__main__":
    run(main, parse_args())
