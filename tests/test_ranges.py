"""Sizes and ranges: absurd sizes refused when parsed, allocations worded with the flags that size
them, divergences with the settings in play, every numeric option of every script bounded (fuzzed)."""
import functools
import re
from pathlib import Path

import pytest

from conftest import ROOT, checksums, parse_refused, run_refused, run_script, written


@pytest.mark.parametrize("module,argv,message", [
    ("train", ["--latent_size", 8, "--image_size", 100000], "--image_size: 100000 must be <= 1024"),
    ("explore_latent_space", ["--grid_size", 100000], "--grid_size: 100000 must be <= 256"),
    ("viz_generation", ["--grid_size", 100000], "--grid_size: 100000 must be <= 256"),
    ("viz_generation", ["--max_std", "1e308"], "--max_std: 1e308 must be <= 100"),
    ("viz_generation", ["--num_samples", 1000000000], "--num_samples: 1000000000 must be <= 1024"),
    ("train", ["--latent_size", 8, "--lr", "1e308"], "--lr: 1e308 must be <= 1000"),
    ("train", ["--latent_size", 8, "--beta", "inf"], "--beta: inf is not a finite number"),
    ("train", ["--latent_size", 8, "--channels", 100000], "--channels: 100000 must be <= 65536"),
    ("sweep_latent_size", ["--latent_sizes", 2, 10**9], "--latent_sizes: 1000000000 must be <= 65536"),
    ("sweep_latent_size", ["--max_parallel", 10**6], "--max_parallel: 1000000 must be <= 1024"),
])
def test_absurd_sizes_are_refused_when_parsed_naming_the_flag_and_its_bound(module, argv, message, capsys):
    assert message in parse_refused(module, argv, capsys)


def test_images_resized_past_the_memory_are_refused_before_any_allocation(tmp_path, capsys):
    # 60000 Fashion-MNIST images at 1024x1024 need about 140 GiB: refused before the resize starts
    data = Path("/usr/share/datasets/fashion-mnist")
    if not data.is_dir():
        pytest.skip("no Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    line = run_refused("train", ["--latent_size", 8, "--dataset", "fashion-mnist", "--data_dir", data,
                                 "--image_size", 1024, "--output_dir", out, "--quiet"], capsys)
    assert "not enough memory for 60000 images of 1x1024x1024" in line
    assert "lower --image_size (at most " in line
    assert written(out) == {}


def test_a_model_too_big_is_refused_before_it_is_built_naming_the_widths_set(tmp_path, capsys):
    out = tmp_path / "out"
    line = run_refused("train", ["--latent_size", 8, "--dataset", "digits", "--channels", 65536, "--dense", 65536,
                                 "--output_dir", out, "--quiet"], capsys)
    assert "the latent-2 conv model has" in line and "M parameters" in line
    assert line.endswith("lower --channels (now 65536), --dense (now 65536)")
    assert written(out) == {}


def test_a_divergence_names_the_settings_in_play_with_their_values(tmp_path, capsys):
    out = tmp_path / "out"
    line = run_refused("train", ["--latent_size", 2, "--dataset", "digits", "--model", "vae", "--num_epochs", 1,
                                 "--beta", "1e6", "--lr", 1000, "--snapshot_every", 0, "--output_dir", out,
                                 "--quiet"], capsys)
    assert "latent-2 vae model diverged" in line
    assert "lower --lr (now 1000), --beta (now 1e+06) and retry" in line
    assert not (out / "model_latent_size_2.pth").exists()


def test_the_fix_of_a_divergence_names_only_what_is_in_play():
    from latentlab.train.loop import divergence_fix
    from model.autoencoder import ModelConfig
    assert divergence_fix(0.003, ModelConfig(family="conv", latent_size=8)) == "--lr (now 0.003)"
    assert divergence_fix(0.5, ModelConfig(family="mlp", latent_size=8, noise_std=0.25, umap_weight=0.1)) == \
        "--lr (now 0.5), --noise_std (now 0.25), --umap_weight (now 0.1)"
    assert divergence_fix(0.5, ModelConfig(family="vae", latent_size=8, beta=1.0)) == "--lr (now 0.5)"
    assert divergence_fix(0.5, ModelConfig(family="conv", latent_size=8, beta=50.0)) == "--lr (now 0.5)"  # no KL term


def test_an_allocation_that_fails_is_worded_with_the_flags_that_size_it():
    import torch
    from latentlab.cli import UserError, memory_for
    with pytest.raises(UserError, match=r"^not enough memory for 10 samples: it needs 931322\.6 GiB and this machine "
                                        r"has .* GiB free; lower --num_samples$"):
        with memory_for("10 samples", "--num_samples", nbytes=10**15):
            pytest.fail("allocated")
    for failure in (MemoryError(), torch.OutOfMemoryError("CUDA out of memory"),
                    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes")):
        with pytest.raises(UserError, match=r"^not enough memory for a grid on this machine; lower --grid_size$"):
            with memory_for("a grid", "--grid_size"):
                raise failure
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # not a catch-all: other errors stay bugs
        with memory_for("a grid", "--grid_size"):
            raise RuntimeError("shapes cannot be multiplied")


@pytest.mark.parametrize("argv,message", [
    (["--datasets", "digits", "imagenet"], "--datasets: unknown dataset 'imagenet'; choose from: digits, mnist"),
    (["--datasets", "folder:/no/such/folder"], "--datasets folder:/no/such/folder: no such folder"),
    (["--datasets", "digits", "--models", "conv", "mlp", "--channels", 8], "--channels and --dense set the conv"),
    (["--datasets", "digits", "--models", "vae", "--bottleneck", "sphere"], "--bottleneck sphere: the VAE's code"),
])
def test_a_sweep_that_every_job_would_fail_is_refused_before_any_folder(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    assert message in run_refused("sweep_latent_size", [*argv, "--output_dir", out, "--quiet"], capsys)
    assert written(out) == {}


def _cmdline(process) -> list:
    """A process's command line, or [] once it has gone."""
    import psutil
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_stops_its_jobs_and_the_same_command_resumes_them(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil
    out = tmp_path / "sweep"
    flags = ["--datasets", "digits", "--models", "mlp", "--latent_sizes", 4, 2, "--num_epochs", 1, "--batch_size", 64,
             "--snapshot_every", 0, "--max_parallel", 2, "--num_scored", 100, "--output_dir", out, "--quiet"]
    sweep = subprocess.Popen([sys.executable, str(ROOT / "sweep_latent_size.py"), *map(str, flags)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def job_processes():  # a job's process, not any other child (a library's helper) the sweep may start
        return [p for p in psutil.Process(sweep.pid).children(recursive=True)
                if any("run_job" in part for part in _cmdline(p))]

    try:
        deadline = time.monotonic() + 300
        while not (jobs := job_processes()):  # the first job has started: the sweep's handlers are in place
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.05)
        sweep.send_signal(signal.SIGTERM)
        _, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 143, err
    line, = err.strip().splitlines()
    assert re.fullmatch(r"interrupted by SIGTERM: stopped [12] running jobs?; re-run the same command to resume", line), line
    alive = [p.pid for p in jobs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"the sweep left its jobs running: {alive}"
    assert not list(out.rglob("error.json"))  # stopped, not failed: the next call resumes them
    again = run_script("sweep_latent_size.py", *flags[:-1])
    assert "2 done, 0 running, 0 failed, 0 left" in again.stdout
    rows = [line.split(" | ")[1:3] for line in again.stdout.splitlines() if line.startswith("| digits |")]
    assert rows == [["MLP autoencoder", "2"], ["MLP autoencoder", "4"], ["PCA", "2"], ["PCA", "4"]]  # sorted


SCRIPTS = ["train", "viz_reconstruction", "encode_latent_space", "viz_latent_space", "viz_kmeans_latent_space",
           "classify_latent_space", "viz_generation", "explore_latent_space", "sweep_latent_size"]
BENCHMARKS = ["bench_chain", "bench_encode_kmeans", "bench_explorer", "bench_probes", "bench_projection", "bench_train",
              "neighbours_over_training", "quality", "training_budget"]


def parser_of(module):
    """The argparse parser a script or benchmark builds (caught as it parses), and what its
    required options need to parse."""
    import argparse

    class Built(Exception):
        pass

    def catch(self, args=None, namespace=None):
        raise Built(self)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Built) as built:
            (module.parse_args if hasattr(module, "parse_args") else module.main)([])
    parser = built.value.args[0]
    required = []
    for a in parser._actions:
        if a.required:
            required += ([a.option_strings[0]] if a.option_strings else []) + ["8"]
    return parser, required


@functools.cache
def numeric_options():
    """(script, its parser, its required options, flag, nargs) of every option with a type."""
    import importlib

    from conftest import load_benchmark
    found = []
    for name in SCRIPTS + BENCHMARKS:
        module = importlib.import_module(name) if name in SCRIPTS else load_benchmark(name)
        parser, required = parser_of(module)
        for a in parser._actions:
            if a.option_strings and a.type is not None and a.type not in (str,):
                found.append((name, parser, required, a.option_strings[0], a.nargs))
    return found


def test_every_numeric_option_of_every_script_has_an_upper_bound():
    import math
    unbounded = []
    assert len(numeric_options()) > 60
    for name, parser, required, flag, _ in numeric_options():
        for huge in ("1" + "0" * 30, "1e300"):
            try:
                value = parser.parse_args([*required, flag, huge] if flag not in required else [flag, huge])
            except SystemExit:
                continue
            v = getattr(value, parser._option_string_actions[flag].dest)
            v = v[0] if isinstance(v, list) else v
            if not (isinstance(v, float) and math.isfinite(v) and v < 1e6):
                unbounded.append(f"{name} {flag} {huge}")
    assert unbounded == []


@pytest.mark.slow
def test_fuzzed_numeric_options_parse_or_are_refused_in_one_line():
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings, strategies as st
    values = st.one_of(st.sampled_from(["0", "-1", "nan", "-nan", "inf", "-inf", "1e308", "1e309", "-1e308", "", " ",
                                        "abc", "1.5", "0x10", "1_000", "9" * 400, "1e-320", "\x00", "٣", "+5", "--"]),
                       st.integers().map(str), st.floats().map(str), st.text(max_size=8))

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(option=st.sampled_from(numeric_options()), value=values)
    def check(option, value):
        name, parser, required, flag, nargs = option
        err = io.StringIO()
        argv = [*(required if flag not in required else []), f"{flag}={value}"]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(argv)
            except SystemExit as e:
                assert e.code == 2, (name, argv, e.code)
                lines = err.getvalue().strip().splitlines()
                assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in lines[0], (name, argv, lines)
    check()


@pytest.mark.parametrize("argv,flag", [(["--mode", "sample", "--num_samples", 1024], "--num_samples"),
                                       (["--mode", "traverse", "--grid_size", 256], "--grid_size")])
def test_generation_past_the_free_memory_is_refused_before_decoding(trained_copy, monkeypatch, capsys, argv, flag):
    from latentlab import cli
    monkeypatch.setattr(cli, "memory_available", lambda device=None: 2**10)  # a machine with 1 KiB free
    before = checksums(trained_copy)
    line = run_refused("viz_generation", [*argv, "--output_dir", trained_copy, "--device", "cpu", "--quiet"], capsys)
    assert re.fullmatch(rf"error: not enough memory for \d+ decoded images of 1x8x8: it needs .* GiB and this "
                        rf"machine has 0\.0 GiB free; lower {flag}", line), line
    assert written(trained_copy) == {k: v for k, v in before.items() if k != ".latentlab.lock"}
