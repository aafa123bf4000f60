"""Step 8: what the bottleneck learned: units in use, intrinsic dimension, agreement between spaces,
label efficiency and robustness to noise, for both models beside PCA of each size and the pixels.

    python diagnose_latent_space.py --latent_space output/latent_space_size_256.npy
    python diagnose_latent_space.py                        # after train.py and encode_latent_space.py
    python diagnose_latent_space.py --noise_levels 0 0.2   # robustness at two noise levels

On the test images the latents encode (encode_latent_space.py --num_samples all: every one). Units in
use: each unit's variance over the images and the active units (Burda et al. 2016), a VAE's KL per
unit. Intrinsic dimension (TwoNN, MLE; scikit-dimension) of each space on a seeded sample of at most
5,000 images, and the principal components that hold 90 % and 95 % of its variance. Agreement: linear
CKA (Kornblith et al. 2019) and 10-NN overlap of the 2-d and N-d latents, of each with PCA of its size
and with the pixels. Label efficiency: logistic regression and 5-NN fit on 1, 10, 100 and all labels
per class, 5 seeded draws from the training split's latents where encode_latent_space.py --split train
left them (scored on the test latents), else from stratified folds of the test latents.
Robustness: Gaussian noise of each --noise_levels std on the input, the MSE against the clean image
and the 5-NN accuracy of the noisy codes. Worst cases: per class, the 4 test images each model
reconstructs worst, and, where classify_latent_space.py has run, the 4 its best probe got wrong with
the highest probability. Writes to --output_dir: diagnosis_latent_size_{N}.json and the figures
diagnosis_{units,labels,noise,worst,errors}_latent_size_{N}.png.
"""
from latentlab.cli import make_parser, run
from latentlab.ranges import noise_level, positive_int
from latentlab.store.inputs import add_input_flags
from latentlab.analysis.flags import add_batch_size
from latentlab.analysis.label_efficiency import LABELS_PER_CLASS
from latentlab.analysis.robustness import NOISE_LEVELS

PIXELS = "raw pixels"


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_input_flags(p, "latent_space", "model_path", "test_data", "pca_baseline")
    g = p.add_argument_group("step")
    g.add_argument("--labels_per_class", type=positive_int, nargs="+", default=list(LABELS_PER_CLASS),
                   help="label efficiency: labelled images per class of each draw (all of them is always scored)")
    g.add_argument("--noise_levels", type=noise_level, nargs="+", default=list(NOISE_LEVELS),
                   help="robustness: std of the Gaussian noise on the input images (pixels in [0, 1]); 0: clean")
    add_batch_size(g, "images per batch through the models")
    return p.parse_args(argv)


def load_inputs(args):
    """(test data, its path, latents [2-d, N-d], the model of each, the PCA baseline, run id): one
    training's, the latents all of the same test images."""
    from pathlib import Path

    import numpy as np

    from latentlab.cli import UserError
    from latentlab.store.inputs import find_latents, find_models, find_pca_baseline
    from latentlab.store.latent_files import check_latents_match
    from latentlab.store.runs import claim

    data, data_path, models = find_models(args.model_path, args.test_data, args.output_dir, args.quiet)
    latents = find_latents(args.latent_space, args.output_dir, data, args.quiet)
    for lat in latents:
        check_latents_match(lat, data, data_path)
        if not np.array_equal(lat.indices, latents[-1].indices):
            raise UserError(f"{lat.path} and {latents[-1].path} encode different test images; re-run "
                            f"encode_latent_space.py so both encode the same")
    by_size = {m.latent_size: m for m in models}
    missing = [lat.path for lat in latents if lat.latent_size not in by_size]
    if missing:
        raise UserError(f"{missing[0]} has no model of its size beside {data_path}; pass the --model_path it was "
                        f"encoded with, or re-run encode_latent_space.py")
    pca = find_pca_baseline(args.pca_baseline, data, data_path, [lat.latent_size for lat in latents])
    run_id = claim(Path(args.output_dir), (data_path, data), *models, *latents, by="diagnose_latent_space.py")
    return data, latents, [by_size[lat.latent_size] for lat in latents], pca, run_id


def feature_spaces(latents, images, pca) -> tuple[dict, list]:
    """({space: (n, d) float32}: each model's latents, PCA of each size, the pixels; [(model space,
    its PCA space)])."""
    from latentlab.analysis.pca import pca_encode
    from latentlab.data.datasets import to_float
    spaces, pairs = {}, []
    for lat in latents:
        k = min(lat.latent_size, pca["components"].shape[0])
        model, base = f"{lat.latent_size}-d {lat.family}", f"PCA, {k}"
        spaces[model], spaces[base] = lat.z, pca_encode(images, pca["mean"], pca["components"], k).numpy()
        pairs.append((model, base))
    spaces[PIXELS] = to_float(images.reshape(len(images), -1)).numpy()
    return spaces, pairs


def units_of(latents, models, nets, images, args, device) -> dict:
    """{model space: units_in_use}, a VAE's KL per unit with it."""
    from latentlab.analysis.diagnosis import kl_per_unit, units_in_use
    out = {}
    for lat, m, net in zip(latents, models, nets):
        kl = kl_per_unit(net, images, device, args.batch_size) if m.family == "vae" else None
        out[f"{lat.latent_size}-d {lat.family}"] = units_in_use(lat.z, kl)
    return out


def robustness_of(nets, pairs, images, labels, pca, args, device, cache) -> tuple[dict, dict]:
    """robustness.robustness of each model (nets) and PCA of its size at every --noise_levels."""
    from functools import partial

    from latentlab.analysis.label_efficiency import cv_pools
    from latentlab.analysis.robustness import model_under_noise, pca_under_noise, robustness
    coders = {}
    for net, (model, base) in zip(nets, pairs):
        coders[model] = partial(model_under_noise, net, images, seed=args.seed,
                                device=device, batch=args.batch_size)
        k = int(base.split(", ")[1])
        coders[base] = partial(pca_under_noise, images, pca["mean"], pca["components"][:k], seed=args.seed,
                               batch=args.batch_size)
    return robustness(coders, labels, args.noise_levels, cv_pools(labels, args.seed), args.seed, device, cache)


def worst_cases(latents, nets, images, clean_errors: dict, device) -> tuple[dict, list]:
    """Per class, the test images each model reconstructs worst (clean_errors: {model space: each
    image's MSE}): ({model: {class: [{"test_index", "mse": {model: ...}}]}}, the figure's rows)."""
    from latentlab.analysis.diagnosis import worst_per_class
    from latentlab.analysis.inference import reconstruct_batches
    from latentlab.data.datasets import to_float
    main_l, names = latents[-1], [f"{lat.latent_size}-d {lat.family}" for lat in latents]
    errors = [clean_errors[name] for name in names]
    found, rows = {}, []
    for name, err in zip(names, errors):
        found[name] = {}
        for c, picked in worst_per_class(err, main_l.labels).items():
            cls = main_l.class_names[c]
            found[name][cls] = [{"test_index": int(main_l.indices[i]), "mse": {n: float(e[i]) for n, e in zip(names, errors)}}
                                for i in picked]
            recs = [next(reconstruct_batches(net, images[picked], device))[1] for net in nets]
            originals = to_float(images[picked])
            rows.append((f"{cls}: worst of {name}\nMSE " + ", ".join(f"{err[i]:.3f}" for i in picked),
                         [(originals[j], [r[j] for r in recs]) for j in range(len(picked))]))
    return found, rows


def probe_errors(out, latents, images) -> tuple[dict, list, list[str]]:
    """Per class, the test images step 6's best probe got wrong with the highest probability, of each
    model: ({model: {"probe", "errors", "by_class": {class: [{"test_index", "predicted",
    "confidence"}]}}}, the figure's rows, notes where step 6 left no predictions)."""
    from latentlab.analysis.diagnosis import confident_errors_per_class
    from latentlab.data.datasets import to_float
    from latentlab.store.step_results import step6_predictions
    preds, missing = step6_predictions(out, latents)
    found, rows = {}, []
    for lat in latents:
        if lat.latent_size not in preds:
            continue
        pred, probe, conf = preds[lat.latent_size]
        if conf is None:
            missing.append(f"step 6's JSON holds no confidence of its predictions of {lat.path}; "
                           f"re-run classify_latent_space.py")
            continue
        name, names = f"{lat.latent_size}-d {lat.family}", lat.class_names
        found[name] = {"probe": probe, "errors": int((pred != lat.labels).sum()), "by_class": {}}
        for c, picked in confident_errors_per_class(pred, conf, lat.labels).items():
            found[name]["by_class"][names[c]] = [{"test_index": int(lat.indices[i]), "predicted": names[pred[i]],
                                                  "confidence": float(conf[i])} for i in picked]
            rows.append((f"{names[c]}: {name}", to_float(images[picked]),
                         [f"said {names[pred[i]]}\np = {conf[i]:.2f}" for i in picked]))
    notes = [f"the probe's most confident errors are not drawn: {m}" for m in missing]
    return found, rows, notes


def main(args) -> dict:
    from pathlib import Path

    from latentlab import caveats
    from latentlab.analysis import diagnosis, diagnosis_report as report, label_efficiency as le
    from latentlab.cli import memory_for, pick_device, seed_everything, worded
    from latentlab.store import files
    from model.autoencoder import model_from_checkpoint

    seed_everything(args.seed)
    device = pick_device(args.device)
    out = Path(args.output_dir)
    data, latents, models, pca, run_id = load_inputs(args)
    nets = [model_from_checkpoint(m.ckpt, device) for m in models]
    main_l = latents[-1]
    labels, num_classes = main_l.labels, len(main_l.class_names)
    images = data["images"][main_l.indices]
    hint = "encode more test images with encode_latent_space.py --num_samples, or lower --labels_per_class"
    with worded(hint):
        le.require_draw(labels, num_classes, min(args.labels_per_class), "the test latents")
    with memory_for(f"the diagnosis of {len(images)} test images", "the latents' --num_samples (encode_latent_space.py)"), \
            worded(hint):  # too few images of a class for the folds: one line
        spaces, pairs = feature_spaces(latents, images, pca)
        plan = label_plan(latents, pca, args)
        with worded(plan["hint"]):
            sizes, left_out = le.drawable(plan["fit_labels"], plan["pools"], args.labels_per_class, num_classes)
        robust, clean_errors = robustness_of(nets, pairs, images, labels, pca, args, device, out / "cache")
        found = {"units": units_of(latents, models, nets, images, args, device),
                 "structure": diagnosis.structure(spaces, args.seed),
                 "agreement": diagnosis.agreement(spaces, agreement_pairs(pairs), args.seed),
                 "label_efficiency": le.label_efficiency(spaces, labels, plan["pools"], sizes, args.seed, device,
                                                         out / "cache", plan["fit"], plan["fit_labels"]),
                 "robustness": robust}
        found["worst_reconstructions"], worst_rows = worst_cases(latents, nets, images, clean_errors, device)
    found["probe_errors"], error_rows, missing = probe_errors(out, latents, images)
    notes = caveats.of_latents(latents) + left_out + missing
    figures = report.draw(found, pairs, le.per_class_all(plan["fit_labels"], plan["pools"]), args, main_l, out,
                          worst_rows, error_rows)
    metrics = {"step": "diagnosis", "run": run_id, "dataset": main_l.dataset, "test_images": len(images),
               "seed": args.seed, "labels_per_class": sizes, "noise_levels": args.noise_levels,
               "label_protocol": plan["protocol"], "figures": figures, **found, "caveats": notes,
               "notes": report.method_notes(len(images), plan["how"])}
    path = files.save_json(metrics, out / f"diagnosis_latent_size_{main_l.latent_size}.json")
    report.print_tables(found, sizes, args.noise_levels, len(images))
    caveats.print_caveats(notes)
    print(f"wrote {', '.join(figures.values())} and {path}")
    return metrics


def label_plan(latents, pca, args) -> dict:
    """How label efficiency draws its labels: held out, from the training split's latents (and
    its images, re-read, for PCA and the pixels) where encode_latent_space.py --split train left
    them beside every test latent; else from the stratified folds of the test latents (cv)."""
    import numpy as np

    from latentlab.analysis import label_efficiency as le
    from latentlab.store.inputs import training_images, training_pair
    labels = latents[-1].labels
    trains = training_pair(latents, "label efficiency", "remove it")
    if trains is None:
        return {"protocol": "cv", "pools": le.cv_pools(labels, args.seed), "fit": None, "fit_labels": labels,
                "hint": "encode more test images with encode_latent_space.py --num_samples, or lower --labels_per_class",
                "how": f"drawn from the other folds of a stratified {le.DRAWS}-fold split of the test images "
                       f"({le.DRAWS} draws, one per fold), scored on the fold; all: every image of the other folds"}
    fit, _ = feature_spaces(trains, training_images(trains)[trains[-1].indices], pca)
    return {"protocol": "heldout", "pools": [(np.arange(len(trains[-1].z)), np.arange(len(labels)))], "fit": fit,
            "fit_labels": trains[-1].labels,
            "hint": "encode more training images with encode_latent_space.py --split train, or lower --labels_per_class",
            "how": f"drawn from the {len(trains[-1].z)} encoded training images ({le.DRAWS} seeded draws), scored on "
                   f"every test image; all: every encoded training image, fit once"}


def agreement_pairs(pairs: list) -> list:
    """The 2-d and N-d latents; each latent and PCA of its size; each latent and the pixels."""
    models = [m for m, _ in pairs]
    return [tuple(models)] * (len(models) > 1) + list(pairs) + [(m, PIXELS) for m in models]


if __name__ == "__main__":
    run(main, parse_args())
