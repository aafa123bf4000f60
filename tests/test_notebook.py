"""notebook_alternative.ipynb: executed headless with the README's command (jupyter nbconvert, an
ipykernel of this Python), with a cell after its parameters cell that shortens the training and
redirects the output."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from conftest import ROOT

NOTEBOOK = ROOT / "notebook_alternative.ipynb"
STEPS = ["train", "viz_reconstruction", "encode_latent_space", "viz_latent_space", "viz_kmeans_latent_space",
         "classify_latent_space", "viz_generation", "diagnose_latent_space"]
LATENT = 8
FIGURES = ["training_curves.png", f"reconstructions_latent_size_{LATENT}_epoch_003.png",
           f"reconstruction_latent_size_{LATENT}.png", f"projection_umap_latent_size_{LATENT}.png",
           "kmeans_latent_space_latent_size_2.png", f"kmeans_latent_space_latent_size_{LATENT}.png",
           f"confusion_matrix_latent_size_{LATENT}.png", "generation_samples_latent_size_2.png",
           f"generation_samples_latent_size_{LATENT}.png", f"generation_interpolation_latent_size_{LATENT}.png",
           "generation_manifold_latent_size_2.png", f"generation_traversal_latent_size_{LATENT}.png",
           *(f"diagnosis_{f}_latent_size_{LATENT}.png" for f in ("units", "labels", "noise", "worst", "errors"))]


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(nb):
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'parameters'"
    return tagged[0]


def test_the_notebook_is_committed_clean_and_calls_every_step():
    nb = read_notebook()
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs before committing"
    params = nb.cells[parameters_index(nb)].source
    assert 'DATASET = "digits"' in params, "the defaults run offline, on the embedded dataset"
    source = "\n".join(c.source for c in code)
    for step in STEPS:  # each step runs through the script's own functions, not a copy of them
        assert f"import {step}\n" in source + "\n" and f"{step}.main({step}.parse_args(" in source, step
    assert "def main" not in source and "argparse" not in source
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(STEPS) + 1


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """A `python3` kernel spec that runs this interpreter (the venv's), found before any other:
    JUPYTER_PATH comes first in jupyter_client's search path."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "python3"


def readme_command() -> list[str]:
    """The README's command that runs the notebook headless (a line of its set-up block)."""
    line, = [l for l in (ROOT / "README.md").read_text().splitlines() if "jupyter nbconvert" in l]
    return shlex.split(line.split("#")[0])


@pytest.mark.slow
def test_the_notebook_runs_with_the_readmes_command_and_shows_every_figure(tmp_path, kernel_of_this_python):
    nb = read_notebook()
    out = tmp_path / "out"
    override = nbformat.v4.new_code_cell(
        f"NUM_EPOCHS = 3\nLATENT_SIZE = {LATENT}\nOUTPUT_DIR = {str(out)!r}\nQUIET = True\n"
        f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix  # the kernel is this venv's Python")
    nb.cells.insert(parameters_index(nb) + 1, override)
    copy = tmp_path / NOTEBOOK.name
    nbformat.write(nb, copy)
    command = readme_command()
    assert command[0] == ".venv/bin/jupyter" and NOTEBOOK.name in command and command[-2:] == ["--output-dir", "output"]
    # this venv's jupyter on the shortened copy; the kernel starts in the copy's folder, so the steps are
    # imported from the repository through PYTHONPATH
    command = [str(Path(sys.executable).parent / "jupyter"), *(str(copy) if a == NOTEBOOK.name else a for a in command[1:-1]),
               str(tmp_path / "executed")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]  # nbconvert stops at the first cell that fails
    nb = nbformat.read(tmp_path / "executed" / NOTEBOOK.name, as_version=4)

    for name in FIGURES:
        with Image.open(out / name) as img:
            img.verify()
    for name in (f"reconstruction_latent_size_{LATENT}.json", f"classification_latent_size_{LATENT}.json"):
        assert (out / name).stat().st_size > 0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(shown) == len(FIGURES), "each figure inline, once"
    tables = [o.data["text/markdown"] for o in outputs
              if o.output_type == "display_data" and o.data.get("text/markdown", "").startswith("| ")]
    assert len(tables) == 7  # steps 1 to 6 and 8 show their numbers
    assert str(out / "generation_traversal_latent_size_8.png") in outputs[-1].text  # the closing listing
