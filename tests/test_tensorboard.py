"""train.py --tensorboard and encode_latent_space.py --tensorboard, read back by a real TensorBoard
server on 127.0.0.1 through its HTTP API; and the sprite and install rules on their own."""
import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import torch
from PIL import Image

from conftest import run_main
from latentlab.train import tensorboard_log
from latentlab.cli import UserError

SERVER_DEADLINE_S = 120  # for the server to start and load the logs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(opener, port, path, **query):
    url = f"http://127.0.0.1:{port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with opener.open(url, timeout=30) as r:
        return r.read()


def _until(deadline: float, fetch, done):
    """fetch() once a second until done(its value) or the deadline; returns the last value."""
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(1)


@pytest.mark.slow
def test_a_real_tensorboard_serves_the_runs_scalars_and_projector(tmp_path):
    out = tmp_path / "out"
    run_main("train", "--latent_size", "4", "--dataset", "digits", "--model", "mlp", "--num_epochs", "2",
             "--batch_size", "64", "--quiet", "--output_dir", str(out), "--tensorboard")
    run_main("encode_latent_space", "--output_dir", str(out), "--num_samples", "100", "--quiet", "--tensorboard")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out / "tensorboard"),
                               "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
                               "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
    runs = {"mlp_latent_size_2", "mlp_latent_size_4"}

    def scalar_tags():
        assert server.poll() is None, server.stderr.read().decode()[-2000:]
        try:
            return json.loads(_get(opener, port, "/data/plugin/scalars/tags"))
        except OSError:  # not listening yet
            return {}

    try:
        tags = _until(time.monotonic() + SERVER_DEADLINE_S, scalar_tags,
                      lambda found: runs <= set(found) and all("loss/train" in found[r] for r in runs))
        assert runs <= set(json.loads(_get(opener, port, "/data/runs")))
        for run in runs:
            assert {"loss/train", "loss/validation", "mse/validation", "learning_rate", "images_per_s"} <= set(tags[run])
            series = json.loads(_get(opener, port, "/data/plugin/scalars/scalars", run=run, tag="loss/train"))
            assert [step for _, step, _ in series] == [1, 2]
        assert json.loads(_get(opener, port, "/data/plugins_listing"))["hparams"]["enabled"]  # add_hparams reached it
        images = json.loads(_get(opener, port, "/data/plugin/images/tags"))
        assert any(t.startswith("reconstructions") for t in images["mlp_latent_size_4"])

        # the projector re-reads its configs in a thread of its own as runs appear, and assigns them (first
        # none, then without shapes) before it fills in the shapes: a request in between sees fewer runs, or
        # no shape, so ask again until it has them
        embeddings = [("mlp_latent_size_2", 2, 359), ("mlp_latent_size_4", 4, 359),  # all 359 digits test images
                      ("mlp_latent_size_4/encoded", 4, 100)]
        deadline = time.monotonic() + SERVER_DEADLINE_S
        projector_runs = set(_until(deadline, lambda: json.loads(_get(opener, port, "/data/plugin/projector/runs")),
                                    lambda found: {run for run, _, _ in embeddings} <= set(found)))
        for run, k, n in embeddings:
            assert run in projector_runs, projector_runs
            (emb,) = _until(deadline, lambda: json.loads(_get(opener, port, "/data/plugin/projector/info",
                                                              run=run))["embeddings"],
                            lambda found: "tensorShape" in found[0])
            assert emb.get("tensorShape") == [n, k], emb
            tensor = _get(opener, port, "/data/plugin/projector/tensor", run=run, name=emb["tensorName"])
            assert len(tensor) == n * k * 4  # float32
            meta = _get(opener, port, "/data/plugin/projector/metadata", run=run, name=emb["tensorName"]).decode()
            lines = meta.strip().split("\n")
            assert lines[0] == "class\ttest index" and len(lines) == n + 1
            sprite = Image.open(io.BytesIO(_get(opener, port, "/data/plugin/projector/sprite_image", run=run,
                                                name=emb["tensorName"])))
            side = math.ceil(math.sqrt(n)) * 8  # 8x8 thumbnails, ceil(sqrt(n)) a side
            assert sprite.size == (side, side) and emb["sprite"]["singleImageDim"] == [8, 8]
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_sprites_too_large_for_tensorboard_are_downscaled_with_a_note(monkeypatch):
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    x, note = tensorboard_log.sprite_images(images)
    assert x.shape == (16, 1, 32, 32) and note is None
    monkeypatch.setattr(tensorboard_log, "SPRITE_LIMIT", 64)  # 4 thumbnails a side: at most 16 pixels each
    x, note = tensorboard_log.sprite_images(images)
    assert x.shape == (16, 1, 16, 16) and "32x32 to 16x16" in note
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_tensorboard_missing_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an absent package looks like to import
    with pytest.raises(UserError, match="pip install tensorboard"):
        tensorboard_log.require_tensorboard()
