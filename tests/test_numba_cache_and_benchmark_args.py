"""The persistent numba cache of UMAP, and the benchmark scripts' argument handling (no timings)."""
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from latentlab.analysis import projection

ROOT = Path(__file__).resolve().parents[1]


def test_numba_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert projection.numba_cache_dir() == tmp_path / "latentlab" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert projection.numba_cache_dir() == tmp_path / "home" / ".cache" / "latentlab" / "numba"


def test_cache_all_numba_functions_writes_machine_code(monkeypatch, tmp_path):
    """A jitted function its author did not cache lands in the cache folder once turned on; one
    that already compiled, and other packages, are left alone."""
    numba = pytest.importorskip("numba")
    pkg = tmp_path / "src" / "jitpkg_for_test"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import numba

        @numba.njit
        def add(a, b):
            return a + b

        @numba.njit
        def mul(a, b):
            return a * b
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    cache = tmp_path / "numba"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(cache))
    mod = importlib.import_module("jitpkg_for_test")
    assert mod.mul(2, 3) == 6  # compiled before caching is turned on: stays as it is
    projection._cache_all_numba_functions(("jitpkg_for_test",))
    assert mod.add(2, 3) == 5
    written = sorted(p.name for p in cache.rglob("*.nbi"))
    assert written and all(name.startswith("__init__.add") for name in written), written


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [
    ("bench_train.py", ["--steps", "0"]),
    ("bench_train.py", ["--num_workers", "-1"]),
    ("bench_projection.py", ["--samples", "3"]),
    ("bench_chain.py", ["--trained", "/nonexistent/folder"]),
    ("training_budget.py", ["/nonexistent/model_latent_size_2.pth"]),
    ("neighbours_over_training.py", ["--plot", "/nonexistent/neighbours_over_training.json"]),
    ("neighbours_over_training.py", ["--plot", "/nonexistent/a.json", "--figure", "/nonexistent/a.png"]),
])
def test_benchmarks_refuse_bad_arguments(script, args):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
