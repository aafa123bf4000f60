"""What a step prints: piped into a log (nohup, SLURM, `make demo > log`) no progress bar, a line
per epoch; --quiet keeps the result tables and the files written; tables never cut a label; a
step that fails leaves no empty folder behind."""
import socket
import sys

import pytest

from conftest import run_main, run_script


@pytest.mark.slow
def test_a_piped_training_writes_a_line_per_epoch_and_no_carriage_return(tmp_path):
    proc = run_script("train.py", "--latent_size", 4, "--dataset", "digits", "--num_epochs", 2,
                      "--output_dir", tmp_path / "out")  # stdout and stderr are pipes, as in `> log 2>&1`
    assert "\r" not in proc.stdout and "\r" not in proc.stderr, "a progress bar was drawn into the pipe"
    epochs = [line for line in proc.stdout.splitlines() if " | epoch " in line]
    assert [line.split(" | ")[:2] for line in epochs] == [
        ["latent    2", "epoch   1/2"], ["latent    2", "epoch   2/2"],
        ["latent    4", "epoch   1/2"], ["latent    4", "epoch   2/2"]]
    assert "test MSE" in proc.stdout and "artifacts in" in proc.stdout


def test_quiet_keeps_the_result_table_and_drops_the_rest(tmp_path, capsys):
    out = tmp_path / "out"
    run_main("train", "--latent_size", 2, "--dataset", "digits", "--num_epochs", 1, "--snapshot_every", 0,
             "--output_dir", out, "--quiet")
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if not line.startswith("caveat: ")]
    assert lines[0].split()[:4] == ["latent", "best", "ep", "val"] and set(lines[1]) == {"-"}
    assert len(lines) == 4 and lines[-1].startswith(f"artifacts in {out}/")  # header, rule, one model, files
    assert "caveat: 2-d model: trained 11 optimiser steps" in printed.out  # a result's caveat stays with its table
    assert printed.err == ""
    run_main("viz_reconstruction", "--output_dir", out, "--quiet")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("on 359 test images") and lines[-1].startswith("wrote ")


def test_progress_bars_are_drawn_on_a_terminal_alone(monkeypatch):
    from latentlab.cli import progress, show_progress
    assert not show_progress(False)  # pytest captures stderr: not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress(False) and not show_progress(True)
    assert progress(range(3), quiet=True).disable and not progress(range(3), quiet=False).disable


def test_a_table_never_cuts_a_label():
    from latentlab.cli import text_table
    folder = "conv autoencoder, latent size 16, folder:/home/someone/projects/2024/photos of the garden/cropped"
    rows = [[folder, "0.01234", "19.09"], ["PCA, 16 components", "0.02000", "17.00"]]
    table = text_table(["on 359 test images", "MSE", "PSNR dB"], rows)
    lines = table.splitlines()
    assert lines[2].startswith(folder + " ") and lines[3].startswith("PCA, 16 components ")
    assert len({line.index("0.0") for line in lines if "0.0" in line}) == 1  # the numbers stay in their column
    short = text_table(["k-means", "NMI"], [["conv autoencoder, latent size 2, digits", "0.500"]]).splitlines()
    assert short[2] == "conv autoencoder, latent size 2, digits 0.500"


def test_a_failed_step_leaves_no_folder_it_made(tmp_path, capsys):
    import viz_reconstruction
    from latentlab.cli import run
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for out in (tmp_path / "new" / "deeper", kept):
        with pytest.raises(SystemExit) as e:  # no test_data.pth there
            run(viz_reconstruction.main, viz_reconstruction.parse_args(["--output_dir", str(out)]))
        assert e.value.code == 2 and "run train.py first" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # new/ and new/deeper/ are gone
    assert (kept / "notes.txt").read_text() == "mine"  # a folder that was there stays, with its files


def test_a_failed_download_leaves_no_data_folder(tmp_path, monkeypatch, capsys):
    def refuse(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    import train
    from latentlab.cli import run
    monkeypatch.chdir(tmp_path)  # data/<name>/ is made under the working folder
    with pytest.raises(SystemExit) as e:
        run(train.main, train.parse_args(["--latent_size", "4", "--dataset", "mnist", "--output_dir", "out"]))
    assert e.value.code == 2 and "cannot download mnist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither out/ nor data/mnist/
