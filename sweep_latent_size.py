"""Sweep: every model family at every latent size, dataset and seed, scored beside PCA, mean ± sd.

    python sweep_latent_size.py --datasets fashion-mnist --models conv vae --latent_sizes 2 8 32 128 --seeds 0 1 2 --max_parallel 2
    python sweep_latent_size.py --datasets cifar10 cifar100 --launcher submitit --slurm_partition gpu --gpus_per_job 1 --cpus_per_job 8
    python sweep_latent_size.py --datasets digits --models mlp vae --latent_sizes 2 8 --seeds 0 1 2 --num_epochs 20 --max_parallel 2   # offline

Each (dataset, family, size, seed) is one job: a train.py run of the model of that size alone (no
2-d companion; train.py's defaults for every training flag not given) into
<output_dir>/<dataset>/seed_<s>/{family}_latent_size_{N}/, then its scores on the test split: MSE,
PSNR and SSIM of the reconstructions of every test image; the accuracy of a linear probe and of
10-NN and the NMI of k-means (one cluster per class) on the encoded test images (--num_samples), by
stratified --folds cross-validation. PCA of each size is scored the same way, per dataset and seed.
A job writes metrics.json last, so a rerun skips it; an interrupted training resumes; a failed job
(error.json) is listed and run again by the next call. SIGTERM or Ctrl-C stops the running jobs
(exit status 143 or 130), and the same command resumes them; every dataset name is checked first.
Writes to --output_dir: sweep_runs.csv (every job), sweep_results.csv and .md (mean ± sd over seeds)
and sweep_metrics_<dataset>.png.
"""
from dataclasses import fields

from latentlab.cli import UserError, make_parser, run
from latentlab.ranges import count_or_all, minutes, nonneg_int, processes, seed_int, width
from latentlab.settings import Settings
from latentlab.training_flags import add_training_flags
from latentlab.analysis.flags import add_folds
from latentlab.generate.flags import add_gmm_components, add_num_scored
from model.autoencoder import FAMILIES


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    p.set_defaults(output_dir="output/sweep")
    default_dataset = next(f.default for f in fields(Settings) if f.name == "dataset")
    g = p.add_argument_group("sweep")
    g.add_argument("--datasets", "--dataset", nargs="+", default=[default_dataset],
                   help="datasets (as train.py's --dataset), each with its own PCA and figure")
    g.add_argument("--seeds", type=seed_int, nargs="+", help="seeds, each a run of every pair (default: --seed)%(default).0s")
    g.add_argument("--latent_sizes", type=width, nargs="+", default=[2, 8, 32, 128], help="bottleneck sizes")
    g.add_argument("--models", nargs="+", default=["conv", "vae"], choices=FAMILIES, help="network families")
    g.add_argument("--num_samples", type=count_or_all, default="all",
                   help="test images encoded for the probes and k-means, a seeded sample ('all': the whole test set)")
    add_folds(g, "folds of the probes' stratified cross-validation")
    add_num_scored(g, "generated images of each sampler scored against the test images (FD, precision, recall)")
    add_gmm_components(g)
    g = p.add_argument_group("launcher")
    g.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: on this machine; submitit: one job each through submitit (SLURM where sbatch exists)")
    g.add_argument("--max_parallel", type=processes,
                   help="jobs at once (local: each in its own process with cores / jobs threads; default 1, in this "
                        "process; submitit: default all)%(default).0s")
    g.add_argument("--slurm_partition", help="submitit on SLURM: the partition (default: SLURM's)%(default).0s")
    g.add_argument("--gpus_per_job", type=nonneg_int, default=0, help="submitit: GPUs per job (0 or 1)")
    g.add_argument("--cpus_per_job", type=processes, help="submitit: CPUs per job, also its torch threads (default: the cluster's; torch's threads)%(default).0s")
    g.add_argument("--timeout_min", type=minutes, default=120, help="submitit: time limit of a job in minutes")
    add_training_flags(p, per_run=False)
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [args.seed]
    if args.gpus_per_job > 1:
        p.error(f"argument --gpus_per_job: {args.gpus_per_job}: a job trains on one GPU; use 0 or 1")
    return args


def main(args) -> dict:
    import time

    from latentlab.store import atomic
    from latentlab.store.inputs import say
    from latentlab.sweep.launch import Progress, run_jobs
    from latentlab.sweep.jobs import PCA, check_jobs, family_name, job_state, load_finished, make_jobs, metrics_path
    from latentlab.sweep.report import aggregate, run_rows, to_markdown, write_outputs

    t0 = time.perf_counter()
    datasets, seeds = list(dict.fromkeys(args.datasets)), list(dict.fromkeys(args.seeds))
    sizes, families = sorted(set(args.latent_sizes)), list(dict.fromkeys(args.models))
    if args.data_dir is not None and len(datasets) > 1:
        raise UserError(f"--data_dir names one dataset's folder, and {len(datasets)} datasets are swept; "
                        f"leave it out and place each dataset's files in data/<name>/")
    check_jobs(args, datasets, families)  # before any folder is made
    out = atomic.ensure_writable(args.output_dir)
    in_process = args.launcher == "local" and (args.max_parallel or 1) == 1
    jobs = make_jobs(args, datasets, seeds, families, sizes, quiet=args.quiet or not in_process)
    states = {job: job_state(job) for job in jobs}  # every finished job is checked against these flags first
    progress = Progress(states, args.quiet)
    say(args.quiet, f"sweep of {len(jobs)} jobs ({len(datasets)} dataset(s) x {', '.join(map(family_name, families))} "
                    f"x sizes {', '.join(map(str, sizes))} x {len(seeds)} seed(s), PCA with each): "
                    f"{progress.summary()}")
    for job, error in progress.failed():
        say(args.quiet, f"  run again: {job.name}, which failed: {error}")
    try:
        run_jobs([j for j, (s, _) in states.items() if s in ("failed", "left")], progress, args)
    finally:  # a SIGTERM too: the bar's line ends before the sweep's last line
        progress.close()

    order = {"dataset": {d: i for i, d in enumerate(datasets)}, "family": {f: i for i, f in enumerate([*families, PCA])}}
    finished = []  # (table order: dataset, family with PCA last, size, seed; the metrics file)
    for job in jobs:
        if progress.states[job][0] == "done":
            for family, folder in ((job.family, job.folder), (PCA, job.pca_folder)):
                if folder is not None:
                    key = (order["dataset"][job.dataset], order["family"][family], job.latent_size, seeds.index(job.seed))
                    finished.append((key, metrics_path(folder), job.settings))
    records = [{**load_finished(path, settings), "folder": str(path.parent)}
               for _, path, settings in sorted(finished, key=lambda f: f[0])]
    paths = write_outputs(records, out, args.num_epochs) if records else {}
    rows = aggregate(run_rows(records))
    print(to_markdown(rows), end="")
    print(f"{progress.summary()}; wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.0f} s")
    failed = progress.failed()
    if failed:
        for job, error in failed:
            say(args.quiet, f"  failed: {job.name}: {error}")
        raise UserError(f"{len(failed)} of {len(jobs)} jobs failed ({failed[0][0].name}: {failed[0][1]}"
                        f"{', ...' if len(failed) > 1 else ''}); run the same command again to re-run them")
    return {"rows": rows, "runs": run_rows(records), **{k: str(p) for k, p in paths.items()}}


if __name__ == "__main__":
    run(main, parse_args())
