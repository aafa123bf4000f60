"""One writer per output folder: a second writer is refused with one line naming the first, or
waits with --wait_for_lock; a killed holder never blocks; readers are not affected."""
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from latentlab.store import locking

TRAIN = ["--latent_size", "2", "--dataset", "digits", "--model", "mlp", "--quiet", "--snapshot_every", "0"]


def start_training(out, *extra):
    cmd = [sys.executable, str(ROOT / "train.py"), *TRAIN, "--output_dir", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_locked(out, proc, timeout=120):
    """Until proc holds out's lock (its pid in the lock file)."""
    deadline = time.monotonic() + timeout
    lock_file = out / locking.LOCK_NAME
    while time.monotonic() < deadline and proc.poll() is None:
        if lock_file.exists() and f'"pid": {proc.pid},' in lock_file.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"the first training never took the lock: {proc.communicate()}")


@pytest.mark.slow
def test_a_second_training_into_the_same_folder_is_refused_and_the_first_finishes_intact(tmp_path):
    from latentlab.store import artifacts
    out = tmp_path / "out"
    first = start_training(out, "--num_epochs", "40")
    try:
        wait_until_locked(out, first)
        second = subprocess.run([sys.executable, str(ROOT / "train.py"), *TRAIN, "--latent_size", "4",
                                 "--num_epochs", "1", "--output_dir", str(out)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is being written by process {first.pid} on" in lines[0], second.stderr
        assert "train.py" in lines[0] and "--wait_for_lock" in lines[0]
        assert first.wait(timeout=300) == 0, first.communicate()
    finally:
        first.kill()
    data = artifacts.load_test_data(out / "test_data.pth")
    assert data["models"] == ["model_latent_size_2.pth"]  # the refused run wrote nothing
    assert not (out / "model_latent_size_4.pth").exists()


@pytest.mark.slow
def test_wait_for_lock_waits_for_the_first_writer_then_runs(tmp_path):
    from latentlab.store import artifacts
    out = tmp_path / "out"
    first = start_training(out, "--num_epochs", "15")
    try:
        wait_until_locked(out, first)
        second = start_training(out, "--num_epochs", "1", "--latent_size", "4", "--wait_for_lock", "--overwrite")
        assert second.wait(timeout=300) == 0, second.communicate()
        assert first.poll() == 0  # the second ran only once the first had finished
    finally:
        first.kill()
    assert artifacts.load_test_data(out / "test_data.pth")["models"] == ["model_latent_size_2.pth", "model_latent_size_4.pth"]


@pytest.mark.slow
def test_a_killed_holder_does_not_block_and_nesting_in_one_process_holds_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from latentlab.store import locking; lock = locking.FolderLock(sys.argv[2]).acquire();"
                               "print('held', flush=True); time.sleep(600)", str(ROOT), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locking.FolderBusy, match=f"process {holder.pid} on"):
            locking.FolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with locking.FolderLock(tmp_path):  # the OS released the dead holder's lock
        with locking.FolderLock(tmp_path):  # re-entrant: the sweep calling a training
            assert locking._held[tmp_path.resolve()] == 2
        assert locking._held[tmp_path.resolve()] == 1
    assert tmp_path.resolve() not in locking._held
    child = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                            "from latentlab.store import locking; locking.FolderLock(sys.argv[2]).acquire()",
                            str(ROOT), str(tmp_path)], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr  # released: another process takes it at once


def test_readers_do_not_take_the_lock(trained):
    """A step that reads a folder while another writes into it is not refused (it writes elsewhere)."""
    with locking.FolderLock(trained):
        proc = subprocess.run([sys.executable, str(ROOT / "viz_reconstruction.py"), "--model_path",
                               str(trained / "model_latent_size_8.pth"), "--test_data",
                               str(trained / "test_data.pth"), "--output_dir", str(trained / "elsewhere"),
                               "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
