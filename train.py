"""Step 1: train the 2-d bottleneck beside the --latent_size bottleneck.

    python train.py --latent_size 256
    python train.py --latent_size 16 --dataset digits
    python train.py --latent_size 8 --dataset digits --overwrite     # replace the run that --output_dir holds
    python train.py --latent_size 64 --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist
    torchrun --nproc_per_node=4 train.py --latent_size 256
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py --latent_size 256

A folder holds one run: train.py refuses an --output_dir that holds another run's files unless
--resume (continue it) or --overwrite (replace it, once the new run has succeeded; a failure leaves
the earlier run as it was). Writes to --output_dir: run.json (the run's id, which every artifact
carries), model_latent_size_{2,N}.pth, test_data.pth, pca_baseline.pth,
train_log_latent_size_{N}.csv, training_curves.png, reconstruction snapshots, training_summary.json,
latent_evolution_latent_size_{2,N}.gif and reconstructions_latent_size_{2,N}.gif (one frame per
epoch; not with --snapshot_every 0); with --tensorboard, TensorBoard logs in tensorboard/.
"""
import os
import sys

from latentlab.cli import make_parser, run
from latentlab.training_flags import add_training_flags


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_training_flags(p)
    return p.parse_args(argv)


def main(args):
    from latentlab.settings import Settings
    from latentlab.train.run import run_training
    return run_training(Settings.from_args(args), args.output_dir, args.device, args.quiet)


if __name__ == "__main__":
    run(main, parse_args())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun, once every file is written and closed:
        sys.stdout.flush()  # gloo's threads can abort a finished process at interpreter exit (pytorch/pytorch#190489)
        sys.stderr.flush()
        os._exit(0)
