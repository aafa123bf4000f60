"""sweep_latent_size.py on the embedded digits with a tiny budget: 2 seeds x 2 families at one size
through --launcher local --max_parallel 2 (one job killed mid-run, then re-run) and through
submitit's LocalExecutor (the MLP's half); the tables, their numbers against the steps', refusals and failures."""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_main, run_script
from latentlab.store import checkpoints, files
from latentlab.cli import UserError
from latentlab.store.locking import LOCK_NAME
from latentlab.sweep.jobs import METRICS, metrics_path, run_dir

FLAGS = ["--latent_sizes", "4", "--models", "mlp", "vae", "--datasets", "digits", "--seeds", "0", "1",
         "--num_epochs", "2", "--batch_size", "64", "--snapshot_every", "0", "--max_parallel", "2",
         "--num_scored", "300"]
ROWS = [(f, 4) for f in ("mlp", "vae", "pca")]  # sizes in order: test_ranges' sweep stopped by SIGTERM
KILLED = ("vae", 4, 1)  # (family, size, seed) of the job killed mid-run: the last one


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A local sweep whose last job is killed (SIGKILL) in its second epoch, then the same command
    again. Returns (output folder, first run, second run, the killed job's checkpoint at the kill)."""
    out = tmp_path_factory.mktemp("local")
    folder = run_dir(out, "digits", KILLED[2], *KILLED[:2])
    ckpt_path = folder / f"model_latent_size_{KILLED[1]}.pth"
    cmd = [sys.executable, str(ROOT / "sweep_latent_size.py"), *FLAGS, "--output_dir", str(out), "--quiet"]
    head = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not ckpt_path.exists():  # its first epoch is written: kill the process that trains it
            assert head.poll() is None, head.communicate()
            time.sleep(0.02)
        pid = json.loads((folder / LOCK_NAME).read_text())["pid"]
        assert pid != head.pid
        os.kill(pid, signal.SIGKILL)
        at_kill = checkpoints.load_checkpoint(ckpt_path)
        first = subprocess.CompletedProcess(cmd, head.wait(timeout=600), *head.communicate())
    finally:
        head.kill()
    second = run_script("sweep_latent_size.py", *FLAGS, "--output_dir", out)
    return out, first, second, at_kill


@pytest.fixture(scope="module")
def submitit_sweep(tmp_path_factory):
    """The MLP's jobs of the local sweep (and their PCA rows) through submitit."""
    out = tmp_path_factory.mktemp("submitit")
    flags = [*FLAGS[:FLAGS.index("--models") + 1], "mlp", *FLAGS[FLAGS.index("--datasets"):]]
    run_script("sweep_latent_size.py", *flags, "--launcher", "submitit", "--cpus_per_job", "1",
               "--output_dir", out, "--quiet")
    return out


@pytest.mark.slow
def test_a_job_killed_mid_run_is_listed_then_resumed_and_finished_by_the_next_call(local_sweep):
    out, first, second, at_kill = local_sweep
    assert at_kill["resume"]["epoch"] == 0  # killed in its second epoch
    assert first.returncode == 2 and first.stderr.count("\n") == 1, first.stderr
    assert "1 of 4 jobs failed (digits, VAE, latent size 4, seed 1: its process was killed by signal 9)" in first.stderr
    assert "4 jobs" in second.stdout and "3 done, 0 running, 1 failed, 0 left" in second.stdout
    assert "run again: digits, VAE, latent size 4, seed 1, which failed: its process was killed" in second.stdout
    assert "4 done, 0 running, 0 failed, 0 left" in second.stdout
    resumed = checkpoints.load_checkpoint(run_dir(out, "digits", 1, "vae", 4) / "model_latent_size_4.pth")
    assert resumed["history"]["epoch"] == [0, 1]
    assert resumed["history"]["seconds"][0] == at_kill["history"]["seconds"][0]  # epoch 1 kept, not retrained
    assert not (run_dir(out, "digits", 1, "vae", 4) / "error.json").exists()


@pytest.mark.slow
def test_local_and_submitit_give_equal_tables_of_mean_and_sd_over_seeds(local_sweep, submitit_sweep):
    out = local_sweep[0]
    local, sub = read_csv(out / "sweep_results.csv"), read_csv(submitit_sweep / "sweep_results.csv")
    assert [(r["family"], int(r["latent_size"])) for r in local] == ROWS
    numbers = [f"{m}_{s}" for m in METRICS for s in ("mean", "sd")]
    shared = [r for r in local if r["family"] in ("mlp", "pca")]
    assert [(r["family"], r["latent_size"]) for r in sub] == [(r["family"], r["latent_size"]) for r in shared]
    assert [[r[c] for c in numbers] for r in shared] == [[r[c] for c in numbers] for r in sub]
    runs = read_csv(out / "sweep_runs.csv")
    assert len(runs) == 2 * len(ROWS)
    for r in local:
        assert r["seeds"] == "2" and r["dataset"] == "digits"
        for m in METRICS:
            two = [float(x[m]) for x in runs if (x["family"], x["latent_size"]) == (r["family"], r["latent_size"])]
            assert float(r[f"{m}_mean"]) == pytest.approx(sum(two) / 2)
            assert float(r[f"{m}_sd"]) == pytest.approx(abs(two[0] - two[1]) / math.sqrt(2))
        assert 0 < float(r["test_mse_mean"]) < 1 and 0 < float(r["test_ssim_mean"]) <= 1
        assert all(0 <= float(r[f"{k}_mean"]) <= 1 for k in ("linear_probe", "knn", "kmeans_nmi"))
        assert 0.5 < float(r["gen_novelty_mean"]) < 5  # samples, not copies of the training images
    md = (out / "sweep_results.md").read_text().splitlines()
    assert len(md) == 2 + len(ROWS) and md[0].startswith("| dataset | model | latent size | seeds | test MSE")
    assert all(" ± " in line for line in md[2:])
    assert (out / "sweep_metrics_digits.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "sweep_cka_digits.png").read_bytes().startswith(b"\x89PNG")
    assert list((submitit_sweep / "submitit").glob("*_result.pkl"))  # the jobs went through submitit


@pytest.mark.slow
def test_numbers_are_those_of_the_training_and_the_steps(local_sweep, tmp_path):
    """The sweep's numbers for one job and its PCA equal what train.py and steps 2, 3, 5 and 6 report."""
    out = local_sweep[0]
    ours = files.load_json(metrics_path(run_dir(out, "digits", 0, "mlp", 4)), "sweep_metrics", "")["metrics"]
    pca = files.load_json(metrics_path(run_dir(out, "digits", 0, "pca", 4)), "sweep_metrics", "")["metrics"]
    assert [p.name for p in run_dir(out, "digits", 0, "mlp", 4).glob("model_*.pth")] == ["model_latent_size_4.pth"]
    steps = tmp_path / "steps"
    shutil.copytree(run_dir(out, "digits", 0, "mlp", 4), steps, ignore=shutil.ignore_patterns(LOCK_NAME))
    common = ["--output_dir", str(steps), "--quiet"]
    rec = run_main("viz_reconstruction", *common)["models"]["4"]
    run_main("encode_latent_space", *common, "--num_samples", "all")
    cls = run_main("classify_latent_space", *common, "--probes", "linear", "knn")["models"]["4"]
    km = run_main("viz_kmeans_latent_space", *common, "--vis_type", "pca")["models"]["4"]
    assert (ours["test_mse"], ours["test_ssim"]) == pytest.approx((rec["autoencoder"]["mse"], rec["autoencoder"]["ssim"]))
    assert (pca["test_mse"], pca["test_ssim"]) == pytest.approx((rec["pca"]["mse"], rec["pca"]["ssim"]))
    assert (ours["linear_probe"], ours["knn"]) == (cls["latent"]["linear"]["accuracy"], cls["latent"]["knn"]["accuracy"])
    assert (pca["linear_probe"], pca["knn"]) == (cls["pca"]["linear"]["accuracy"], cls["pca"]["knn"]["accuracy"])
    assert ours["kmeans_nmi"] == pytest.approx(km["nmi"])


@pytest.mark.slow
def test_a_sweep_with_other_flags_is_refused_before_it_trains(local_sweep):
    out = local_sweep[0]
    def stamps():  # of every file but the writer locks, which each run takes
        return sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.name != LOCK_NAME)
    before = stamps()
    proc = run_script("sweep_latent_size.py", *FLAGS, "--num_epochs", "3", "--output_dir", out, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "was swept with --num_epochs 2, not 3" in proc.stderr
    assert stamps() == before


def test_a_failing_job_is_listed_with_its_error_and_the_others_still_run(tmp_path):
    import sweep_latent_size
    (tmp_path / "imageless").mkdir()  # a folder that exists fails in the job, when its images are read
    args = sweep_latent_size.parse_args(["--datasets", f"folder:{tmp_path / 'imageless'}", "--latent_sizes", "2",
                                         "--models", "mlp", "--output_dir", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(UserError, match=r"^1 of 1 jobs failed \(folder:.*imageless, MLP autoencoder, latent size 2, "
                                        r"seed 0: .*imageless.*\); run the same command again to re-run them$"):
        sweep_latent_size.main(args)
    errors = list((tmp_path / "out").rglob("error.json"))
    assert len(errors) == 1
    error = json.loads(errors[0].read_text())["error"]
    assert "imageless" in error and "Traceback" in json.loads(errors[0].read_text())["traceback"]
    from latentlab.sweep.jobs import job_state, make_jobs
    job, = make_jobs(args, args.datasets, args.seeds, args.models, args.latent_sizes, quiet=True)
    assert job_state(job) == ("failed", error)  # what the next call lists, and runs again


def test_submitit_missing_is_one_line_on_how_to_install(monkeypatch, tmp_path):
    import sweep_latent_size
    from latentlab.sweep import cluster
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    args = sweep_latent_size.parse_args(["--launcher", "submitit", "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match=r"^--launcher submitit needs submitit: pip install submitit"):
        cluster.submitit_executor(args, tmp_path)


def test_the_table_shows_mean_and_sd_with_the_count_of_seeds():
    from latentlab.sweep.report import aggregate, to_markdown
    runs = [{"dataset": "digits", "family": "mlp", "latent_size": 2, "seed": s, "train_seconds": 1.0,
             **{m: v for m in METRICS}} for s, v in ((0, 0.5), (1, 0.7))]
    one, two = aggregate(runs[:1]), aggregate(runs)
    assert one[0]["seeds"] == 1 and one[0]["knn_sd"] is None
    assert two[0]["seeds"] == 2 and two[0]["knn_mean"] == pytest.approx(0.6)
    assert two[0]["knn_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert "| 0.600 ± 0.141 |" in to_markdown(two) and " ± " not in to_markdown(one)


def test_the_code_columns_average_the_runs_that_have_them_and_old_runs_stay_readable():
    from latentlab.sweep.jobs import CODE_METRICS
    from latentlab.sweep.report import aggregate, run_rows, to_markdown
    record = {"family": "mlp", "latent_size": 8, "settings": {"dataset": "digits", "seed": 0}}
    old = {**record, "metrics": {m: 0.5 for m in METRICS}}  # finished before the code columns
    new = {**record, "settings": {"dataset": "digits", "seed": 1},
           "metrics": {**{m: 0.7 for m in METRICS}, "active_units": 6, "intrinsic_dim": 4.2}}
    rows = aggregate(run_rows([old, new]))
    assert rows[0]["active_units_mean"] == 6 and rows[0]["active_units_sd"] is None
    assert rows[0]["knn_mean"] == pytest.approx(0.6)
    assert aggregate(run_rows([old]))[0]["intrinsic_dim_mean"] is None
    table = to_markdown(rows)
    assert all(CODE_METRICS[m][0] in table.splitlines()[0] for m in CODE_METRICS) and "| 4.2 |" in table


def test_a_job_scores_the_active_units_and_intrinsic_dimension_of_its_code():
    import numpy as np
    import torch
    from latentlab.sweep.evaluate import score
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    features = np.concatenate([rng.normal(size=(120, 3)) + 4 * np.eye(3)[labels], np.zeros((120, 2))], 1)
    x = torch.rand(4, 1, 8, 8)
    metrics = score([(x, x)], features.astype(np.float32), labels, 3, 3, 0)
    assert metrics["active_units"] == 3 and 1.5 < metrics["intrinsic_dim"] < 4.5


def test_the_cka_matrix_compares_the_codes_of_one_seed_and_is_1_on_its_diagonal(tmp_path):
    import numpy as np
    from latentlab.diagnosis_figures import cka_figure
    from latentlab.store import files
    from latentlab.sweep.report import cka_matrix
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4))
    records = []
    for i, (family, size, seed, code) in enumerate([("mlp", 4, 0, z), ("pca", 4, 0, 2 * z), ("mlp", 8, 0, rng.normal(size=(200, 8))),
                                                      ("mlp", 4, 1, z[:, :2])]):
        (tmp_path / str(i)).mkdir()
        np.save(tmp_path / str(i) / "code_sample.npy", code)
        records.append({"family": family, "latent_size": size, "settings": {"seed": seed}, "folder": str(tmp_path / str(i)),
                        "code_sample": "code_sample.npy"})
    records.append({"family": "vae", "latent_size": 2, "settings": {"seed": 0}})  # finished before codes were kept
    matrix, labels, seed = cka_matrix(records)
    assert seed == 0 and len(labels) == 3 and labels[1] == "PCA, 4"
    assert np.allclose(np.diag(matrix), 1) and matrix[0, 1] == pytest.approx(1) and matrix[0, 2] < 0.2
    assert files.save_figure(cka_figure(matrix, labels, "t"), tmp_path / "cka.png").read_bytes().startswith(b"\x89PNG")

