"""Step 3: encode test (or training) images into latent_space_size_{N}.npy with the 2-d and the N-d model.

    python encode_latent_space.py --model_path output/model_latent_size_256.pth --test_data output/test_data.pth --num_samples 1000
    python encode_latent_space.py                       # after train.py: both models, 1000 test images
    python encode_latent_space.py --num_samples all     # the whole test set
    python encode_latent_space.py --split train         # every training image, for classify_latent_space.py --protocol heldout

Both models encode the same images: a seeded random sample of --num_samples (the --seed
permutation of the split, kept in split order), or every image with `all`. --split test encodes the
held-out images of test_data.pth; --split train the training split (validation images included),
re-read from the dataset the checkpoint names (dataset, data folder, image size), never copied into
--output_dir. A VAE gives its posterior mean. Writes to --output_dir, per model:
latent_space_size_{k}.npy (test) or latent_space_size_{k}_train.npy (train), float32 samples x k,
and a .json beside it (split, labels, indices into the split, class names, dataset, model, size, family);
with --tensorboard, also the latents in TensorBoard's projector (tensorboard --logdir output/tensorboard).
"""
from latentlab.cli import make_parser, progress, run
from latentlab.ranges import count_or_all
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_batch_size


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "model_path", "test_data")
    g = p.add_argument_group("step")
    g.add_argument("--split", choices=("test", "train"), default="test",
                   help="test: the held-out images of test_data.pth; train: the training split, re-read from the dataset")
    g.add_argument("--num_samples", type=count_or_all, default=None,
                   help="images to encode, a seeded sample ('all': the whole split; more than there are: all) "
                        "(default: 1000 of the test split, all of the training split)")
    add_batch_size(g)
    g.add_argument("--tensorboard", action="store_true",
                   help="also put the latents in TensorBoard's projector, in <output_dir>/tensorboard/<run>/encoded/")
    return p.parse_args(argv)


def split_to_encode(split: str, data: dict, data_path, model) -> tuple:
    """(uint8 images, labels, a folder's file names (else []), where they come from) of the split:
    the test data, or the training split the model's checkpoint names, re-read from its files."""
    from latentlab.store.inputs import load_training_split, reading_of
    if split == "test":
        return data["images"], data["labels"], data.get("files", []), {"test_data": str(data_path)}
    images, labels, paths = load_training_split(model, with_files=True)  # both models trained on it
    ds = model.ckpt["dataset"]
    return images, labels, paths, {"data_dir": ds["data_dir"], "image_size": ds["image_size"], **reading_of(ds),
                                   "dataset_split": ds["split"], "image_shape": list(images.shape[1:]),
                                   "split_size": len(images)}


def main(args) -> dict:
    from pathlib import Path

    import numpy as np

    from latentlab.store import files, latent_files
    from latentlab.train import tensorboard_log
    from latentlab.cli import UserError, memory_for, pick_device, seed_everything
    from latentlab.analysis.inference import encode_images, sample_test_items
    from latentlab.store.inputs import find_models, say
    from latentlab.store.runs import claim
    from model.autoencoder import FAMILIES, model_from_checkpoint

    if args.tensorboard:
        tensorboard_log.require_tensorboard()
    device = pick_device(args.device)
    seed_everything(args.seed)
    data, data_path, models = find_models(args.model_path, args.test_data, args.output_dir, args.quiet)
    num_samples = args.num_samples or (1000 if args.split == "test" else "all")
    images, labels, paths, source = split_to_encode(args.split, data, data_path, models[-1])
    total = len(images)
    indices, selection = sample_test_items(total, num_samples, args.seed, args.split)
    n = len(indices)
    if num_samples != "all" and num_samples > total:
        say(args.quiet, f"note: --num_samples {num_samples} but the {args.split} split holds {total} images; encoding all of them")
    chosen = images[indices] if n < total else images
    out = Path(args.output_dir)
    run = claim(out, (data_path, data), *models, by="encode_latent_space.py")
    written = {}
    for m in models:
        model = model_from_checkpoint(m.ckpt, device)
        with progress(total=n, unit="img", desc=f"encoding with the {m.latent_size}-d model", quiet=args.quiet) as bar:
            with memory_for(f"batches of {min(args.batch_size, n)} images", "--batch_size", device=device):
                z = encode_images(model, chosen, device, args.batch_size, progress=bar.update)
        if not np.isfinite(z).all():
            raise UserError(f"{m.path} gives non-finite latents; the model diverged: retrain it")
        meta = {"run": run, "split": args.split, "labels": labels[indices].tolist(), "indices": indices.tolist(),
                "class_names": data["class_names"], "dataset": data["dataset"], "model_path": str(m.path),
                "latent_size": m.latent_size, "family": m.family, **source, "selection": selection, "seed": args.seed,
                "latent": FAMILIES[m.family].latent,
                "model_caveats": m.ckpt.get("test_metrics", {}).get("caveats", []),
                **({"files": [paths[i] for i in indices]} if paths else {})}  # a folder's, relative to it
        path, _ = latent_files.save_latents(files.latents_path(out, m.latent_size, args.split), z, meta)
        written[str(m.latent_size)] = {"path": str(path), "shape": list(z.shape), "model": m.label}
        print(f"{m.label}: {z.shape[0]} x {z.shape[1]} latents -> {path}")
        if args.tensorboard:
            folder = tensorboard_log.run_dir(out, m.family, m.latent_size) / "encoded"
            writer = tensorboard_log.open_writer(folder)
            note = tensorboard_log.log_embedding(writer, z, labels[indices], indices, data["class_names"], chosen,
                                                 "encoded test latents", len(m.ckpt["history"]["epoch"]))
            writer.close()
            say(args.quiet, note or f"{m.label}: latents in TensorBoard's projector -> {folder}")
    say(args.quiet, f"encoded {selection}")
    return {"step": "encode", "run": run, "dataset": data["dataset"], "split": args.split, "num_samples": n,
            "selection": selection, "latents": written}


if __name__ == "__main__":
    run(main, parse_args())
