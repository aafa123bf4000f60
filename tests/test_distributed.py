"""Training with torchrun (DistributedDataParallel) on CPUs (gloo): the shards, the agreement with
a single process, every model family, --resume, and the artifacts a distributed run writes."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings, strategies as st

from conftest import ROOT, run_main, run_meta
from latentlab.store import artifacts, checkpoints
from latentlab.cli import UserError
from latentlab.train.distributed import (World, close_distributed, epoch_shard, init_distributed, local_batch_size,
                                   run_agreed, same_everywhere)
from latentlab.settings import Settings
from model.autoencoder import model_from_checkpoint
from latentlab.train.loop import TrainingSplit, train_model
from latentlab.train.umap_loss import UmapLoss, fuzzy_graph
from model.autoencoder import ModelConfig


# ---------------------------------------------------------------- the shards
@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), world=st.integers(1, 8), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 50))
def test_epoch_shards_cover_every_item_once_up_to_the_padding(n, world, seed, epoch):
    shards = [epoch_shard(n, seed, epoch, World(rank=r, size=world)) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank for s in shards)  # the same number of steps on every rank
    everything = torch.cat(shards)
    assert set(everything.tolist()) == set(range(n))  # every item, each epoch
    # disjoint except the wrap-around padding: exactly per_rank * world - n repeats
    assert len(everything) - len(set(everything.tolist())) == per_rank * world - n < world
    if n >= world:  # each item at most twice
        assert max(torch.bincount(everything).tolist()) <= 2
    # seeded: the same seed and epoch give the same shards; the single process takes the whole permutation
    assert torch.equal(shards[0], epoch_shard(n, seed, epoch, World(rank=0, size=world)))
    single = epoch_shard(n, seed, epoch, World())
    assert sorted(single.tolist()) == list(range(n))


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), world=st.integers(1, 6), local_batch=st.integers(1, 40), seed=st.integers(0, 1000))
def test_step_i_of_all_ranks_together_is_step_i_of_one_process(n, world, local_batch, seed):
    """Why a DDP run follows the single-process run with the same global batch."""
    if n % world:
        n += world - n % world  # without padding the match is exact
    shards = [epoch_shard(n, seed, 3, World(rank=r, size=world)) for r in range(world)]
    single = epoch_shard(n, seed, 3, World())
    batch = local_batch * world
    for i in range(-(-n // batch)):
        together = torch.cat([s[i * local_batch:(i + 1) * local_batch] for s in shards])
        assert sorted(together.tolist()) == sorted(single[i * batch:(i + 1) * batch].tolist())


def test_shards_change_with_the_epoch_and_the_seed():
    world = World(rank=1, size=2)
    assert not torch.equal(epoch_shard(100, 0, 0, world), epoch_shard(100, 0, 1, world))
    assert not torch.equal(epoch_shard(100, 0, 0, world), epoch_shard(100, 1, 0, world))


# ---------------------------------------------------------------- every family, two processes
# (family, noise, UMAP loss weight): the VAE also with denoising noise, the conv model also with the UMAP loss
FAMILIES = [("conv", 0.0, 0.0), ("mlp", 0.0, 0.0), ("vae", 0.1, 0.0), ("conv", 0.0, 0.1)]


def _name(family, umap_weight, k):
    return f"{family}{'_umap' if umap_weight else ''}_{k}.pth"


def _tiny_data():
    """128 smooth 8x8 images (random blobs): learnable, made in microseconds."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centres = torch.rand(128, 2, generator=g) * 8
    img = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 6)
    return (img[:, None] * 255).round().to(torch.uint8)


def _train_all(out, world):
    split = TrainingSplit(_tiny_data(), torch.arange(0, 112), torch.arange(112, 128))
    s = Settings(latent_size=3, num_epochs=2, batch_size=16, lr=2e-3, seed=5)
    meta = run_meta("blobs", ["blob"], split)
    graph = fuzzy_graph(split.images[split.train])
    for family, noise, umap_weight in FAMILIES:
        umap = UmapLoss(graph, split.train, umap_weight, 32) if umap_weight else None
        for k in (2, 3):  # both bottlenecks
            cfg = ModelConfig(family=family, latent_size=k, image_shape=(1, 8, 8), noise_std=noise,
                              umap_weight=umap_weight)
            train_model(cfg, split, s, out / _name(family, umap_weight, k), meta, world, quiet=True, umap=umap)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    w = init_distributed(torch.device("cpu"))
    assert (w.rank, w.size) == (rank, world) and torch.distributed.get_backend() == "gloo"
    _train_all(out, w)
    assert same_everywhere(7.0, w) and not same_everywhere(float(rank), w)

    def fails_on_rank_1():
        if w.rank == 1:
            raise UserError("rank 1 cannot read its file")
    try:  # an error on one process stops both, each with one line, instead of a hang
        run_agreed(fails_on_rank_1, w)
    except UserError as e:
        (out / f"error_{rank}.txt").write_text(str(e))
    close_distributed(w)
    assert not torch.distributed.is_initialized()
    # Everything is checked and written. Skip the interpreter's teardown: there, with no Python frame
    # left, a spawned gloo process aborts about once in 20 runs ("terminate called without an active
    # exception", torch 2.14), after the group was left.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_family_trains_the_same_in_two_processes(tmp_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    mp.spawn(_worker, args=(2, _free_port(), tmp_path / "ddp"), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_all(tmp_path / "one", World())
    finally:
        torch.set_num_threads(threads)  # as it was: later in-process trainings compare with subprocesses
    assert (tmp_path / "ddp" / "error_1.txt").read_text() == "rank 1 cannot read its file"
    assert "another process failed" in (tmp_path / "ddp" / "error_0.txt").read_text()
    for family, noise, umap_weight in FAMILIES:
        for k in (2, 3):
            ddp = checkpoints.load_checkpoint(tmp_path / "ddp" / _name(family, umap_weight, k))  # the single-process format
            one = checkpoints.load_checkpoint(tmp_path / "one" / _name(family, umap_weight, k))
            assert ddp["state_dict"].keys() == one["state_dict"].keys()  # no "module." prefixes
            assert ddp["train"]["processes"] == 2 and one["train"]["processes"] == 1
            model_from_checkpoint(ddp)
            a, b = ddp["history"]["val_loss"], one["history"]["val_loss"]
            if noise == 0 and family != "vae" and not umap_weight:
                # the same batches, gradients averaged by DDP: equal up to float summation order
                assert a == pytest.approx(b, rel=1e-4)
                for n, w in one["resume"]["state_dict"].items():
                    assert torch.allclose(ddp["resume"]["state_dict"][n], w, rtol=1e-3, atol=1e-5), n
            else:
                # each rank draws its own noise, VAE samples and graph edges: the same expectation, other samples
                assert a[-1] == pytest.approx(b[-1], rel=0.05)
            assert a[-1] < a[0]  # and it learns


# ---------------------------------------------------------------- torchrun, as a user runs it
def torchrun(*args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "train.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_torchrun_trains_resumes_and_matches_one_process(tmp_path):
    """torchrun with 2 gloo processes, stopped after 3 epochs and resumed to 6, against one process
    doing the same (global batch 64; the cosine schedule follows each call's --num_epochs)."""
    out, single = tmp_path / "out", tmp_path / "single"
    common = ["--latent_size", 8, "--dataset", "digits", "--batch_size", 64, "--snapshot_every", 0]
    run_main("train", *common, "--output_dir", single, "--num_epochs", 3, "--quiet")
    run_main("train", *common, "--output_dir", single, "--num_epochs", 6, "--resume", "--quiet")
    common += ["--output_dir", out]
    first = torchrun(*common, "--num_epochs", 3, "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]
    assert checkpoints.load_checkpoint(out / "model_latent_size_8.pth")["resume"]["epoch"] == 2
    second = torchrun(*common, "--num_epochs", 6, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    # rank 0 alone reports: one summary, one line per epoch
    assert second.stdout.count("artifacts in") == 1
    assert second.stdout.count("latent    8 | epoch   4/6") == 1
    assert "2 processes" in second.stdout
    test = artifacts.load_test_data(out / "test_data.pth")
    artifacts.load_pca_baseline(out / "pca_baseline.pth")
    for k in (2, 8):
        ddp = checkpoints.load_checkpoint(out / f"model_latent_size_{k}.pth")
        one = checkpoints.load_checkpoint(single / f"model_latent_size_{k}.pth")
        artifacts.check_test_data_matches(test, ddp, "test", f"model_latent_size_{k}.pth")
        model = model_from_checkpoint(ddp)
        assert model.encode(test["images"][:4].float() / 255).shape == (4, k)
        assert ddp["state_dict"].keys() == one["state_dict"].keys()
        assert len(ddp["history"]["val_loss"]) == 6 and ddp["test_metrics"]["test_mse"] > 0
        # Both runs see the same 64 images at every step (digits: 1294 training images, even, so
        # no padding), and DDP averages the two halves' gradients: they differ by float summation
        # order only. 1e-3 is far below one epoch's progress, so a lost shard, a doubled step or a
        # wrong average fails it.
        assert ddp["history"]["val_loss"] == pytest.approx(one["history"]["val_loss"], rel=1e-3)
    assert (out / "training_curves.png").is_file() and (out / "training_summary.json").is_file()


def test_the_global_batch_must_split_evenly():
    assert local_batch_size(64, World(rank=1, size=4)) == 16
    with pytest.raises(UserError, match="--batch_size 63 is the global batch and must split evenly across the 2"):
        local_batch_size(63, World(rank=0, size=2))
