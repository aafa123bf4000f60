"""Step 7: explore the latent space: sample new images, interpolate, traverse, and score the samples.

Samples new images from latents drawn by a sampler fitted on the training split's latents (or a VAE's prior),
interpolates between two test images, traverses the latent space (the 2-d model's manifold; one dimension at a
time of the N-d model), and scores generation (latentlab/generate/scores.py): Frechet distance, precision/recall
and novelty of --num_scored samples of each --sampler against the test images, in the features of a classifier
trained once per dataset, beside the training images, PCA, the reconstructions, and the midpoints of test pairs.

    python viz_generation.py
    python viz_generation.py --model_path output/model_latent_size_256.pth --test_data output/test_data.pth
    python viz_generation.py --mode interpolate --index 3 17 --steps 12
    python viz_generation.py --mode score --sampler gaussian gmm

Writes to --output_dir: generation_samples_latent_size_{2,N}.png, generation_interpolation_latent_size_{N}.png,
generation_manifold_latent_size_2.png, generation_traversal_latent_size_{N}.png, generation_latent_size_{N}.json
(the scores), feature_classifier_{key}.pth (the classifier, reused by later runs) and cache/ (the fitted samplers).
"""
import math
from pathlib import Path

from latentlab.cli import make_parser, run
from latentlab.ranges import figure_images, nonneg_int, row_length, std_multiple, width
from latentlab.generate.flags import add_gmm_components, add_num_scored
from latentlab.generate.sampling import SAMPLERS
from latentlab.store.inputs import add_input_flags
from model.autoencoder import FAMILIES

MODES = ("sample", "interpolate", "traverse", "score", "all")


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "model_path", "test_data", "pca_baseline")
    g = p.add_argument_group("generation")
    g.add_argument("--mode", default="all", choices=MODES, help="which figures to draw, or the scores (all: every one)")
    g.add_argument("--sampler", nargs="+", default=["gaussian"], choices=SAMPLERS,
                   help="how new latents are drawn, each scored (the first draws the figure): gaussian or gmm fitted "
                        f"on the training latents, prior (the family's own: {', '.join(k for k, f in FAMILIES.items() if f.prior)})")
    add_gmm_components(g)
    add_num_scored(g, "score: generated images per sampler, scored against the test images")
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


class Figures:
    """Step 7's figures of the models (find_models' order, the 2-d first), each saved as it is drawn."""

    def __init__(self, args, out, data, models, nets, latents, device):
        from latentlab.generate.sampling import class_name
        self.args, self.out, self.models, self.nets, self.latents, self.device = args, out, models, nets, latents, device
        self.images, self.labels, self.dataset = data["images"], data["labels"], data["dataset"]
        names = list(data.get("class_names") or [])
        self.class_names = [class_name(names, k) for k in range(max(len(names), int(self.labels.max()) + 1))]
        self.written = {}

    def save(self, fig, name):
        from latentlab.store import files
        self.written[name] = path = files.save_figure(fig, self.out / f"generation_{name}.png")
        print(f"wrote {path}")

    def room_for(self, k, n, flags):
        from latentlab.cli import memory_for
        shape = self.nets[k].config.image_shape
        return memory_for(f"{n} decoded images of {'x'.join(map(str, shape))}", flags,
                          2 * n * math.prod(shape) * 4)  # float32 images, and their concatenation

    def decode(self, k, z, flags):
        from latentlab.generate.sampling import decode_latents
        with self.room_for(k, len(z), flags):
            return decode_latents(self.nets[k], z, self.device)

    def cls(self, i):
        return self.class_names[self.labels[i]]

    def samples(self, sampler, z_train, num_train):
        from latentlab import image_grids
        from latentlab.cli import worded
        from latentlab.generate import sampling as gen
        args = self.args
        for m in self.models:
            k = m.latent_size
            with self.room_for(k, args.num_samples, "--num_samples"):  # refused before a sampler is fitted and cached
                pass
            with worded("lower --gmm_components"):
                packed = None if sampler == "prior" else gen.fitted_sampler(z_train[k], sampler, args.gmm_components,
                                                                            args.seed, self.out / "cache")
            z = gen.draw(sampler, packed, k, args.num_samples, args.seed, FAMILIES[m.family].prior)
            what = f"{args.num_samples} new images decoded from latents {gen.sampler_source(sampler, packed, num_train)}"
            fig = image_grids.image_grid(self.decode(k, z, "--num_samples"), f"{what}\n{m.label}",
                                         gen.grid_shape(args.num_samples)[1])
            self.save(fig, f"samples_latent_size_{k}")

    def interpolation(self):
        import torch

        from latentlab import image_grids
        from latentlab.cli import worded
        from latentlab.data.datasets import to_float
        from latentlab.generate import sampling as gen
        with worded("pass the test data of a larger training"):
            a, b = gen.pick_pair(self.labels, self.args.index, self.args.seed)
        ends, steps, cls = to_float(self.images[[a, b]]), self.args.steps, self.cls
        rows = [(f"{m.latent_size}-d", torch.cat([ends[:1], self.decode(m.latent_size, gen.interpolate_latents(
            self.latents[m.latent_size][a], self.latents[m.latent_size][b], steps), "--steps"), ends[1:]]))
            for m in self.models]
        cols = [f"image {a}\nclass {cls(a)}", *(f"t={t:.2f}" for t in torch.linspace(0, 1, steps).tolist()),
                f"image {b}\nclass {cls(b)}"]
        big, sizes = self.models[-1], " and ".join(str(m.latent_size) for m in self.models)
        what = (f"Interpolation in latent space from test image {a} (class {cls(a)}) to test image {b} (class {cls(b)})\n"
                f"{big.name}, latent size{'s' if len(self.models) > 1 else ''} {sizes}, {self.dataset}; "
                f"originals at both ends")
        self.save(image_grids.image_rows(rows, what, col_titles=cols), f"interpolation_latent_size_{big.latent_size}")

    def traversals(self):
        from latentlab.generate import sampling as gen
        a = self.args.index[0] if self.args.index else gen.pick_pair(self.labels, None, self.args.seed)[0]
        for m in self.models:
            (self.manifold if m.latent_size == 2 else self.traversal)(m, a)

    def manifold(self, m, a):
        from latentlab import image_grids
        from latentlab.generate import sampling as gen
        z_test = self.latents[m.latent_size]
        grid, xs, ys = gen.manifold_grid(z_test, self.args.grid_size)
        what = (f"The 2-d latent space: decodings over the 1st-99th percentile box of the test latents "
                f"({gen.share_outside(z_test, xs, ys):.0%} of the test points lie outside it)")
        fig = image_grids.latent_manifold(self.decode(m.latent_size, grid, "--grid_size"), xs.numpy(), ys.numpy(),
                                          z_test.numpy(), self.labels.numpy(), self.class_names, f"{what}\n{m.label}")
        self.save(fig, f"manifold_latent_size_{m.latent_size}")

    def traversal(self, m, a):
        import torch

        from latentlab import image_grids
        from latentlab.data.datasets import to_float
        from latentlab.generate import sampling as gen
        args, z_test = self.args, self.latents[m.latent_size]
        dims = gen.top_variance_dims(z_test, args.num_dims)
        std = z_test.double().std(dim=0, unbiased=False)
        offsets = gen.traversal_offsets(args.max_std, args.traverse_steps)
        grid = gen.traversal_latents(z_test[a], dims, std, offsets)  # (dims, offsets, N)
        decoded = self.decode(m.latent_size, grid.flatten(0, 1), "--num_dims or --traverse_steps").unflatten(0, grid.shape[:2])
        original = to_float(self.images[a:a + 1])
        rows = [(f"dim {d}\n(std {std[d]:.2f})", torch.cat([original, decoded[i]])) for i, d in enumerate(dims.tolist())]
        cols = ["original", *[f"{o:+.3g} std" if abs(o) > 1e-9 else "0 std\n(reconstruction)" for o in offsets.tolist()]]
        what = (f"Latent traversal around test image {a} (class {self.cls(a)}): one dimension at a time, "
                f"the {len(dims)} highest-variance dimensions of the test latents")
        self.save(image_grids.image_rows(rows, f"{what}\n{m.label}", col_titles=cols), f"traversal_latent_size_{m.latent_size}")


def main(args) -> dict:
    """Draw the figures of --mode (and score, with --mode score or all); returns {figure name: path written}."""
    import torch

    from latentlab.cli import UserError, pick_device, seed_everything
    from latentlab.analysis.inference import encode_images
    from latentlab.store.inputs import find_models, find_pca_baseline, load_training_split
    from latentlab.store.runs import claim
    from model.autoencoder import model_from_checkpoint

    if args.steps < 2:
        raise UserError(f"--steps {args.steps} is too few: an interpolation needs at least its two ends")
    seed_everything(args.seed)
    device = pick_device(args.device)
    out = Path(args.output_dir)
    data, data_path, models = find_models(args.model_path, args.test_data, out, args.quiet)
    nets = {m.latent_size: model_from_checkpoint(m.ckpt, device) for m in models}
    check_indices(args.index, len(data["images"]))
    samplers = list(dict.fromkeys(args.sampler))
    plain = [m for m in models if FAMILIES[m.family].prior is None]
    if "prior" in samplers and plain:
        raise UserError(f"--sampler prior: the {plain[0].label} is a plain autoencoder, with no prior to draw from; "
                        f"use gaussian or gmm (fitted on its training latents)")
    modes = ("sample", "interpolate", "traverse", "score") if args.mode == "all" else (args.mode,)
    pca = find_pca_baseline(args.pca_baseline, data, data_path, list(nets)) if "score" in modes else None
    fitted = "score" in modes or ("sample" in modes and samplers[0] != "prior")
    train_x, train_y = load_training_split(models[-1]) if fitted else (None, None)
    run_id = claim(out, (data_path, data), *models, by="viz_generation.py")
    latents = {k: torch.from_numpy(encode_images(net, data["images"], device)) for k, net in nets.items()}
    z_train = {k: encode_images(net, train_x, device) for k, net in nets.items()} if fitted else {}
    figures = Figures(args, out, data, models, nets, latents, device)
    if "sample" in modes:
        figures.samples(samplers[0], z_train, 0 if train_x is None else len(train_x))
    if "interpolate" in modes:
        figures.interpolation()
    if "traverse" in modes:
        figures.traversals()
    if "score" in modes:
        score(args, out, run_id, data, models, nets, train_x, train_y, z_train, pca, samplers, device)  # prints its JSON's path
    return figures.written


def score(args, out, run_id, data, models, nets, train_x, train_y, z_train, pca, samplers, device):
    """The scores of every sampler and baseline: generation_latent_size_{N}.json and a printed table."""
    from latentlab import caveats
    from latentlab.generate import feature_net, scores as gen_scores
    from latentlab.store import files
    from latentlab.cli import text_table, worded
    from latentlab.store.inputs import say

    net, classifier = feature_net.obtain(out, data["dataset"], train_x, train_y, data["images"], data["labels"],
                                         len(data["class_names"]), device, args.quiet)
    say(args.quiet, f"feature classifier: {classifier['test_accuracy']:.1%} accurate on the test images "
                    f"({'trained now' if classifier['trained_now'] else 'trained before'}: {classifier['path']})")
    scorer = gen_scores.Scorer.of_test_images(net, data["images"], device, train_x)
    with worded("lower --gmm_components, or use a dataset with more images"):
        result = gen_scores.score_generation(models, nets, data["images"], train_x, (pca["mean"], pca["components"]),
                                             samplers, args.gmm_components, args.num_scored, args.seed, scorer,
                                             out / "cache", device, z_train,
                                             progress=lambda what: say(args.quiet, f"scoring {what}..."))
    found = caveats.of_models({m.latent_size: m.ckpt.get("test_metrics", {}).get("caveats", []) for m in models})
    found += caveats.copied_test_images(scorer.train is not None and scorer.real_nearest == 0)  # so no novelty
    result = {"kind": "generation_scores", "format_version": files.FORMAT_VERSION, "run": run_id,
              "dataset": data["dataset"], "classifier": classifier, "caveats": found, **result}
    path = files.save_json(result, out / f"generation_latent_size_{models[-1].latent_size}.json")
    print(f"\nGeneration scores, {data['dataset']}: in the features of the classifier ({classifier['test_accuracy']:.1%} "
          f"test accuracy); FD lower is better, precision and recall higher, novelty about 1 (0: copies of training images)")
    print(text_table(gen_scores.TABLE_HEADER, gen_scores.table_rows(result)))
    caveats.print_caveats(found)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(main, parse_args())
