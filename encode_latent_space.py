"""Step 3: encode test images into latent_space_size_{N}.npy with the 2-d and the N-d model.

    python encode_latent_space.py --model_path output/model_latent_size_256.pth --test_data output/test_data.pth --num_samples 1000
    python encode_latent_space.py                       # after train.py: both models, 1000 test images
    python encode_latent_space.py --num_samples all     # the whole test set

Both models encode the same test images: a seeded random sample of --num_samples (the --seed
permutation of the test set, kept in test-set order), or every image with `all`. A VAE gives its
posterior mean. Writes to --output_dir, per model: latent_space_size_{k}.npy (float32, samples x k)
and latent_space_size_{k}.json (labels, test indices, class names, dataset, model, size, family);
with --tensorboard, also the latents in TensorBoard's projector (tensorboard --logdir output/tensorboard).
"""
from latentlab.cli import count_or_all, make_parser, positive_int, run
from latentlab.inputs import add_input_flags


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "model_path", "test_data")
    g = p.add_argument_group("step")
    g.add_argument("--num_samples", type=count_or_all, default=1000,
                   help="test images to encode, a seeded sample ('all': the whole test set; more than there are: all)")
    g.add_argument("--batch_size", type=positive_int, default=512, help="images per batch")
    g.add_argument("--tensorboard", action="store_true",
                   help="also put the latents in TensorBoard's projector, in <output_dir>/tensorboard/<run>/encoded/")
    return p.parse_args(argv)


def main(args) -> dict:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from latentlab import artifacts, tensorboard_log
    from latentlab.cli import UserError, pick_device, seed_everything
    from latentlab.inputs import find_models, say
    from latentlab.inference import encode_images, sample_test_items

    if args.tensorboard:
        tensorboard_log.require_tensorboard()
    device = pick_device(args.device)
    seed_everything(args.seed)
    data, data_path, models = find_models(args.model_path, args.test_data, args.output_dir, args.quiet)
    images, labels = data["images"], data["labels"]
    total = len(images)
    indices, selection = sample_test_items(total, args.num_samples, args.seed)
    n = len(indices)
    if args.num_samples != "all" and args.num_samples > total:
        say(args.quiet, f"note: --num_samples {args.num_samples} but the test data holds {total} images; encoding all of them")
    chosen = images[indices]
    out = Path(args.output_dir)
    written = {}
    for m in models:
        model = artifacts.model_from_checkpoint(m.ckpt, device)
        with tqdm(total=n, unit="img", desc=f"encoding with the {m.latent_size}-d model", disable=args.quiet, leave=False) as bar:
            z = encode_images(model, chosen, device, args.batch_size, progress=bar.update)
        if not np.isfinite(z).all():
            raise UserError(f"{m.path} gives non-finite latents; the model diverged: retrain it")
        meta = {"labels": labels[indices].tolist(), "indices": indices.tolist(), "class_names": data["class_names"],
                "dataset": data["dataset"], "model_path": str(m.path), "latent_size": m.latent_size,
                "family": m.family, "test_data": str(data_path), "selection": selection, "seed": args.seed,
                "latent": "posterior mean" if m.family == "vae" else "encoder output"}
        path, _ = artifacts.save_latents(artifacts.latents_path(out, m.latent_size), z, meta)
        written[str(m.latent_size)] = {"path": str(path), "shape": list(z.shape), "model": m.label}
        say(args.quiet, f"{m.label}: {z.shape[0]} x {z.shape[1]} latents -> {path}")
        if args.tensorboard:
            folder = tensorboard_log.run_dir(out, m.family, m.latent_size) / "encoded"
            writer = tensorboard_log.open_writer(folder)
            note = tensorboard_log.log_embedding(writer, z, labels[indices], indices, data["class_names"], chosen,
                                                 "encoded test latents", len(m.ckpt["history"]["epoch"]))
            writer.close()
            say(args.quiet, note or f"{m.label}: latents in TensorBoard's projector -> {folder}")
    say(args.quiet, f"encoded {selection}")
    return {"step": "encode", "dataset": data["dataset"], "num_samples": n, "selection": selection, "latents": written}


if __name__ == "__main__":
    run(main, parse_args())
