"""The benchmark scripts run as a user runs them, on tiny inputs (their numbers are not checked:
speed is measured by running them, never asserted), and refuse bad input in one line."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, load_benchmark, run_main, run_script
from latentlab.cli import UserError
from model.autoencoder import ModelConfig, model_from_checkpoint


@pytest.mark.slow
def test_the_data_benchmark_runs_on_a_tiny_folder_and_refuses_a_bad_size(tmp_path):
    # one folder: each of its three loads is a process of its own (the small folder takes the same path)
    out = run_script("benchmarks/bench_data.py", "--work_dir", tmp_path, "--photos", 6, "--photo_size", "80x60",
                     "--small", 0, "--image_size", 8, "--loader_workers", 0, "--repeats", 1).stdout
    assert "photos: 6 JPEGs of 80x60 -> 8x8" in out and "small:" not in out
    assert out.count("load_dataset, from the cache") == 1 and out.count("ImageFolder's speed") == 1
    bad = run_script("benchmarks/bench_data.py", "--photo_size", "3000", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "is not WIDTHxHEIGHT" in bad.stderr


@pytest.mark.slow
def test_the_data_benchmark_measures_a_training_from_the_map_and_from_memory(tmp_path):
    out = run_script("benchmarks/bench_data.py", "--work_dir", tmp_path, "--photos", 0, "--small", 0,
                     "--small_size", "16x16", "--image_size", 8, "--train_sizes", 30).stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["30"]]
    mb = [[float(r[k].replace(",", "")) for k in (4, 5)] for r in rows]  # peak RSS and peak anon, MB
    assert [r[2] for r in rows] == ["mapped", "memory"] and all(rss > anon > 0 for rss, anon in mb)


def test_training_budget_reads_every_epoch_and_draws_each_size(trained, tmp_path, capsys):
    budget = load_benchmark("training_budget")
    figure = tmp_path / "budget.png"
    curves = budget.main(budget.parse_args([str(trained / "model_latent_size_2.pth"),
                                            str(trained / "model_latent_size_8.pth"), "--figure", str(figure)]))
    assert [c["latent_size"] for c in curves] == [2, 8] and figure.stat().st_size > 0
    for c in curves:
        ckpt = torch.load(trained / f"model_latent_size_{c['latent_size']}.pth", weights_only=True)
        assert c["val_mse"] == ckpt["history"]["val_mse"] and len(c["minutes"]) == 6
        assert c["minutes"] == sorted(c["minutes"]) and c["test_mse"] == ckpt["test_metrics"]["test_mse"]
    assert curves[0]["network"] == "conv 32, dense 512 128 32, 6 epochs"  # digits: one stage
    sphere = ModelConfig(channels=(64, 128), latent_size=64, image_shape=(1, 28, 28), bottleneck="sphere").to_dict()
    assert budget.network(sphere, {"num_epochs": 20}) == "conv 64 128, on a sphere, 20 epochs"
    assert budget.network({**sphere, "bottleneck": "linear", "umap_weight": 0.1}, {"num_epochs": 20}) == \
        "conv 64 128, UMAP loss 0.1, 20 epochs"
    assert "to the paper's MSE" in capsys.readouterr().out


@pytest.mark.slow
def test_neighbours_over_training_scores_each_epochs_model_held_out_and_draws_the_runs(tmp_path, capsys):
    """Each epoch's row is the held-out k-NN of that epoch's weights (the last epoch's, rebuilt from the
    checkpoint's resume state, agree), its validation MSE and minutes are the history's; --plot draws."""
    from sklearn.neighbors import KNeighborsClassifier
    from latentlab.data.datasets import load_dataset
    from latentlab.analysis.inference import encode_images
    bench = load_benchmark("neighbours_over_training")
    out = tmp_path / "run"
    result = bench.main(bench.parse_args(["--output_dir", str(out), "--train_args", "--latent_size", "2",
                                          "--dataset", "digits", "--num_epochs", "2", "--snapshot_every", "0"]))
    ckpt = torch.load(out / "model_latent_size_2.pth", weights_only=True)
    assert [r["epoch"] for r in result["epochs"]] == [1, 2]
    assert [r["val_mse"] for r in result["epochs"]] == ckpt["history"]["val_mse"]
    assert result["epochs"][-1]["minutes"] == pytest.approx(sum(ckpt["history"]["seconds"]) / 60)
    data = load_dataset("digits")
    last = model_from_checkpoint(ckpt, weights="last")
    knn = KNeighborsClassifier(5).fit(encode_images(last, data.train_x, "cpu"), data.train_y.numpy())
    assert result["epochs"][-1]["knn5"] == knn.score(encode_images(last, data.test_x, "cpu"), data.test_y.numpy())
    assert json.loads((out / "neighbours_over_training.json").read_text())["model"] == \
        "conv autoencoder, latent size 2, digits"
    assert "epoch   2 |" in capsys.readouterr().out

    figure = tmp_path / "curve.png"
    bench.main(bench.parse_args(["--plot", str(out / "neighbours_over_training.json"), "--figure", str(figure)]))
    assert figure.stat().st_size > 0
    with pytest.raises(SystemExit):
        bench.parse_args(["--plot", str(out / "neighbours_over_training.json")])  # no --figure
    with pytest.raises(UserError, match="give files this benchmark wrote"):
        bench.main(bench.parse_args(["--plot", str(out / "model_latent_size_2.pth"), "--figure", str(figure)]))


@pytest.mark.slow
def test_a_benchmark_given_a_bad_input_says_so_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--dataset", "imagenet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown dataset 'imagenet'" in proc.stderr


def test_the_training_benchmark_times_the_loss_on_the_network_train_py_builds(capsys):
    bench_train = load_benchmark("bench_train")
    args = bench_train.parse_args(["--dataset", "digits", "--latent_size", "2", "--steps", "2", "--warmup", "1",
                                   "--repeats", "1", "--num_workers", "0", "--umap_edges", "16", "64"])
    row = bench_train.main(args)["models"]["conv"]
    assert set(row["umap_time_multiple"]) == {16, 64} and all(m > 0 for m in row["umap_time_multiple"].values())
    assert row["images_per_s"]["UMAP loss, 64 edges"] > 0
    assert "UMAP loss, 64 edges:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [
    ("bench_train.py", ["--steps", "0"]),
    ("bench_train.py", ["--num_workers", "-1"]),
    ("bench_projection.py", ["--samples", "3"]),
    ("bench_projection.py", ["--latents", "/nonexistent/latent_space_size_2.npy"]),
    ("bench_chain.py", ["--trained", "/nonexistent/folder"]),
    ("bench_explorer.py", ["--folder", "/nonexistent/folder"]),
    ("bench_explorer.py", ["--folder", ".", "--points", "0"]),
    ("training_budget.py", ["/nonexistent/model_latent_size_2.pth"]),
    ("neighbours_over_training.py", ["--plot", "/nonexistent/neighbours_over_training.json"]),
    ("neighbours_over_training.py", ["--plot", "/nonexistent/a.json", "--figure", "/nonexistent/a.png"]),
])
def test_benchmarks_refuse_bad_arguments(script, args, capsys):
    """Through run(), as each __main__ does, in this process (bench_data's refusal runs as typed)."""
    from latentlab.cli import run
    bench = load_benchmark(script.removesuffix(".py"))
    with pytest.raises(SystemExit) as e:
        run(bench.main, bench.parse_args(args))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error:" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_the_projection_benchmark_times_a_file_of_latents(tmp_path, capsys):
    """--latents: step 3's file, read as the steps read it, each projection in a process of its own."""
    import numpy as np
    from latentlab.store.latent_files import save_latents
    n = 300
    path, _ = save_latents(tmp_path / "latent_space_size_8.npy", np.random.default_rng(0).normal(size=(n, 8)),
                           {"labels": [i % 10 for i in range(n)], "indices": list(range(n)), "latent_size": 8,
                            "dataset": "digits", "class_names": list("0123456789"), "family": "conv",
                            "split": "test", "run": "a1"})
    bench = load_benchmark("bench_projection")
    out = bench.main(bench.parse_args(["--latents", str(path), "--methods", "pca", "--json", str(tmp_path / "p.json")]))
    assert (out["samples"], out["dims"], list(out["methods"])) == (n, 8, ["pca"])
    assert out["methods"]["pca"]["in_process_s"] > 0 and json.loads((tmp_path / "p.json").read_text()) == out
    assert "latents 300 x 8" in capsys.readouterr().out


@pytest.mark.slow
def test_the_explorer_benchmark_builds_opens_and_hovers_a_small_page(trained, tmp_path):
    import shutil
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver")
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    run_main("encode_latent_space", "--output_dir", out, "--num_samples", "all", "--quiet")
    shot = tmp_path / "shot.png"
    printed = run_script("benchmarks/bench_explorer.py", "--folder", out, "--points", 200, "--vis_type", "pca",
                         "--repeats", 1, "--hovers", 3, "--screenshot", shot).stdout
    assert "200 points (200 of 359 encoded test images drawn" in printed and "hover to image: median" in printed
    assert shot.stat().st_size > 10_000 and len(list(out.glob("explorer_latent_size_8_tiles_*"))) == 1
