"""Step 1: train the 2-d bottleneck beside the --latent_size bottleneck.

    python train.py --latent_size 256
    python train.py --latent_size 16 --dataset digits
    python train.py --latent_size 64 --dataset fashion-mnist --data_dir /usr/share/datasets/fashion-mnist
    torchrun --nproc_per_node=4 train.py --latent_size 256
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py --latent_size 256

Writes to --output_dir: model_latent_size_{2,N}.pth, test_data.pth, pca_baseline.pth,
train_log_latent_size_{N}.csv, training_curves.png, reconstruction snapshots, training_summary.json.
"""
from latentlab.cli import fraction, make_parser, nonneg_float, nonneg_int, positive_float, positive_int, run
from latentlab.datasets import DATASETS
from latentlab.training import PRECISIONS
from model.autoencoder import FAMILIES


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n")[0])
    add_training_flags(p)
    return p.parse_args(argv)


def add_training_flags(p, one_model: bool = True) -> None:
    """The flags of a training. one_model=False leaves out --latent_size, --model and --resume,
    which sweep_latent_size.py sets for each of its runs."""
    g = p.add_argument_group("model")
    if one_model:
        g.add_argument("--latent_size", type=positive_int, required=True, help="size of the second bottleneck (the first is 2)")
        g.add_argument("--model", default="conv", choices=FAMILIES, help="network family (vae: conv encoder/decoder)")
    g.add_argument("--noise_std", type=nonneg_float, default=0.0, help="denoising: std of Gaussian noise on the input")
    g.add_argument("--beta", type=nonneg_float, default=1.0, help="VAE: weight of the KL term")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="gtsrb", help=f"one of: {', '.join(DATASETS)}")
    g.add_argument("--data_dir", default=None, help="folder holding the dataset's files (default data/<name>/)")
    g.add_argument("--image_size", type=positive_int, default=None, help="resize images to this square size (default: native; 32 for gtsrb and folders)")
    g.add_argument("--val_fraction", type=fraction, default=0.1, help="share of the training split held out for model selection")
    g = p.add_argument_group("training")
    g.add_argument("--num_epochs", type=positive_int, default=10, help="epochs per model")
    g.add_argument("--batch_size", type=positive_int, default=128, help="global batch size (split evenly across torchrun processes)")
    g.add_argument("--lr", type=positive_float, default=3e-3, help="peak Adam learning rate")
    g.add_argument("--lr_schedule", default="cosine", choices=["cosine", "constant"],
                   help="cosine: decay per step from --lr to 0 over --num_epochs")
    g.add_argument("--patience", type=nonneg_int, default=0, help="early stopping: epochs without a better validation loss (0: off)")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="autocast of the forward pass; auto: bf16 on CUDA GPUs, and on CPUs with native bf16 "
                        "(AVX512-BF16 or AMX) for images of 16x16 or more, fp32 elsewhere")
    if one_model:
        g.add_argument("--resume", action="store_true", help="continue an interrupted run from its last completed epoch")
    g.add_argument("--snapshot_every", type=nonneg_int, default=5, help="save a reconstruction snapshot every N epochs (0: off)")


def main(args):
    from latentlab.experiment import run_training
    return run_training(args)


if __name__ == "__main__":
    run(main, parse_args())
