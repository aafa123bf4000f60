"""Step 7: explore the latent space: sample new images, interpolate, traverse.

Samples new images from random latents, interpolates between two test images, and traverses the
latent space (the 2-d model's manifold; one dimension at a time of the N-d model).

    python viz_generation.py
    python viz_generation.py --model_path output/model_latent_size_256.pth --test_data output/test_data.pth
    python viz_generation.py --mode interpolate --index 3 17 --steps 12

Writes to --output_dir: generation_samples_latent_size_{2,N}.png, generation_interpolation_latent_size_{N}.png,
generation_manifold_latent_size_2.png, generation_traversal_latent_size_{N}.png.
"""
import math
from pathlib import Path

from latentlab.cli import figure_images, make_parser, nonneg_int, row_length, std_multiple, width, run
from latentlab.inputs import add_input_flags

MODES = ("sample", "interpolate", "traverse", "all")


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "model_path", "test_data")
    g = p.add_argument_group("generation")
    g.add_argument("--mode", default="all", choices=MODES, help="which figures to draw")
    g.add_argument("--num_samples", type=figure_images, default=64, help="sample: images in the grid (at most 1024)")
    g.add_argument("--index", type=nonneg_int, nargs="+", default=None, metavar="I",
                   help="test image indices: interpolate between A and B (random by --seed when not given); "
                        "traverse around A (default: a random test image)")
    g.add_argument("--steps", type=row_length, default=10, help="interpolate: decoded points from A to B, ends included")
    g.add_argument("--grid_size", type=row_length, default=20,
                   help="traverse, 2-d model: decoded images per side of the manifold grid")
    g.add_argument("--num_dims", type=width, default=8,
                   help="traverse, N-d model: how many of the highest-variance latent dimensions to vary")
    g.add_argument("--max_std", type=std_multiple, default=3.0,
                   help="traverse, N-d model: vary each dimension from -max_std to +max_std of its std (at most 100: "
                        "the test latents lie within a few)")
    g.add_argument("--traverse_steps", type=row_length, default=7,
                   help="traverse, N-d model: offsets from -max_std to +max_std")
    return p.parse_args(argv)


def check_indices(index, n: int) -> None:
    """--index: one or two indices of test images, each in range."""
    from latentlab.cli import UserError
    if index is None:
        return
    if len(index) > 2:
        raise UserError(f"--index takes one or two test image indices, got {len(index)}")
    for i in index:
        if not 0 <= i < n:
            raise UserError(f"--index {i} is out of range: the test data has {n} images (0..{n - 1})")


def main(args) -> dict:
    """Draw the figures of --mode; returns {figure name: path written}."""
    import torch

    from latentlab import files, generation as gen, plots
    from latentlab.cli import UserError, memory_for, pick_device, seed_everything, worded
    from latentlab.datasets import to_float
    from latentlab.inference import encode_images
    from latentlab.inputs import find_models
    from latentlab.runs import claim
    from model.autoencoder import model_from_checkpoint

    if args.steps < 2:
        raise UserError(f"--steps {args.steps} is too few: an interpolation needs at least its two ends")
    seed_everything(args.seed)
    device = pick_device(args.device)
    out = Path(args.output_dir)
    data, data_path, models = find_models(args.model_path, args.test_data, out, args.quiet)
    nets = {m.latent_size: model_from_checkpoint(m.ckpt, device) for m in models}
    images, labels = data["images"], data["labels"]
    names = list(data.get("class_names") or [])
    class_names = [gen.class_name(names, k) for k in range(max(len(names), int(labels.max()) + 1))]
    check_indices(args.index, len(images))
    claim(out, (data_path, data), *models, by="viz_generation.py")
    dataset = data.get("dataset", "?")
    latents = {k: torch.from_numpy(encode_images(net, images, device)) for k, net in nets.items()}
    modes = ("sample", "interpolate", "traverse") if args.mode == "all" else (args.mode,)
    written = {}

    def save(fig, name):
        path = files.save_figure(fig, out / f"generation_{name}.png")
        written[name] = path
        print(f"wrote {path}")

    def decode(k, z, flags):
        shape = nets[k].config.image_shape
        with memory_for(f"{len(z)} decoded images of {'x'.join(map(str, shape))}", flags,
                        2 * len(z) * math.prod(shape) * 4):  # float32 images, and their concatenation
            return gen.decode_latents(nets[k], z, device)

    def title(m, what):
        return f"{what}\n{m.label}"

    def cls(i):
        return class_names[labels[i]]

    if "sample" in modes:
        for m in models:
            z, source = gen.sample_latents(m.family, latents[m.latent_size], args.num_samples, args.seed)
            _, ncols = gen.grid_shape(args.num_samples)
            fig = plots.image_grid(decode(m.latent_size, z, "--num_samples"),
                                   title(m, f"{args.num_samples} new images decoded from latents {source}"), ncols)
            save(fig, f"samples_latent_size_{m.latent_size}")

    if "interpolate" in modes:
        with worded("pass the test data of a larger training"):
            a, b = gen.pick_pair(labels, args.index, args.seed)
        ends = to_float(images[[a, b]])
        rows = []
        for m in models:
            z = gen.interpolate_latents(latents[m.latent_size][a], latents[m.latent_size][b], args.steps)
            rows.append((f"{m.latent_size}-d", torch.cat([ends[:1], decode(m.latent_size, z, "--steps"), ends[1:]])))
        ts = [f"t={t:.2f}" for t in torch.linspace(0, 1, args.steps).tolist()]
        cols = [f"image {a}\nclass {cls(a)}", *ts, f"image {b}\nclass {cls(b)}"]
        big = models[-1]
        sizes = " and ".join(str(m.latent_size) for m in models)
        what = (f"Interpolation in latent space from test image {a} (class {cls(a)}) to test image {b} (class {cls(b)})\n"
                f"{big.name}, latent size{'s' if len(models) > 1 else ''} {sizes}, {dataset}; "
                f"originals at both ends")
        save(plots.image_rows(rows, what, col_titles=cols), f"interpolation_latent_size_{big.latent_size}")

    if "traverse" in modes:
        a = args.index[0] if args.index else gen.pick_pair(labels, None, args.seed)[0]
        for m in models:
            z_test = latents[m.latent_size]
            if m.latent_size == 2:
                grid, xs, ys = gen.manifold_grid(z_test, args.grid_size)
                outside = gen.share_outside(z_test, xs, ys)
                fig = plots.latent_manifold(
                    decode(m.latent_size, grid, "--grid_size"), xs.numpy(), ys.numpy(), z_test.numpy(),
                    labels.numpy(), class_names,
                    title(m, f"The 2-d latent space: decodings over the 1st-99th percentile box of the test latents "
                             f"({outside:.0%} of the test points lie outside it)"))
                save(fig, f"manifold_latent_size_{m.latent_size}")
            else:
                dims = gen.top_variance_dims(z_test, args.num_dims)
                std = z_test.double().std(dim=0, unbiased=False)
                offsets = gen.traversal_offsets(args.max_std, args.traverse_steps)
                grid = gen.traversal_latents(z_test[a], dims, std, offsets)  # (dims, offsets, N)
                decoded = decode(m.latent_size, grid.flatten(0, 1), "--num_dims or --traverse_steps")
                decoded = decoded.unflatten(0, grid.shape[:2])  # (dims, offsets, C, H, W)
                original = to_float(images[a:a + 1])
                rows = [(f"dim {d}\n(std {std[d]:.2f})", torch.cat([original, decoded[i]]))
                        for i, d in enumerate(dims.tolist())]
                cols = ["original", *[f"{o:+.3g} std" if abs(o) > 1e-9 else "0 std\n(reconstruction)" for o in offsets.tolist()]]
                what = (f"Latent traversal around test image {a} (class {cls(a)}): one dimension at a time, "
                        f"the {len(dims)} highest-variance dimensions of the test latents")
                save(plots.image_rows(rows, title(m, what), col_titles=cols), f"traversal_latent_size_{m.latent_size}")
    return written


if __name__ == "__main__":
    run(main, parse_args())
