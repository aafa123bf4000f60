"""UMAP / t-SNE / PCA of latents, cached by input content.

Every method first standardises each latent dimension (zero mean, unit variance); UMAP and t-SNE
then start from the first 50 principal components when there are more than 50 dimensions (the
usual denoising step before a neighbour graph). The result is cached in
`<cache_dir>/projection_{method}_{dims}d_{key}.npy`, where key hashes the bytes of the latents, the method, every parameter and the library version, so
a later step (or a second run) that asks for the same projection of the same latents loads it
instead of computing it again. Cache files are plain float32 .npy (loaded with
allow_pickle=False), written atomically; a damaged one is computed again and replaced.

UMAP runs on numba, which compiles its functions at their first call in every process.
`import_umap` points numba's cache at a persistent folder
(`$XDG_CACHE_HOME/latentlab/numba`, else `~/.cache/latentlab/numba`; an explicit NUMBA_CACHE_DIR
wins) and turns caching on for every numba function of umap and pynndescent (their authors cache
only some), so only the first UMAP on a machine compiles; later processes load the machine code.
"""
from __future__ import annotations

import os
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

from latentlab.store import files

METHODS = ("umap", "tsne", "pca")
METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
PRE_PCA_DIMS = 50  # UMAP / t-SNE start from at most this many principal components
# Up to this many samples, UMAP gets exact nearest neighbours computed here (torch) instead of
# pynndescent's approximate graph, whose nn_descent takes the distance function as an argument and
# so cannot come from numba's on-disk cache: it would compile in every fresh process.
EXACT_NEIGHBOURS_MAX = 50_000
# UMAP's layout runs 500 epochs up to 10,000 samples and 200 above by default. From this many
# samples it runs 200, which scored as 500 on trustworthiness, 2-D k-NN and k-means NMI
# (docs/performance.md); smaller sets keep 500, where 200 lost accuracy.
UMAP_SHORT_LAYOUT_FROM = 5_000
MIN_SAMPLES = 5


def numba_cache_dir() -> Path:
    """Where numba's compiled code of UMAP is kept between processes: under the user's cache."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentlab" / "numba"


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.access(path, os.W_OK | os.X_OK)
    except OSError:
        return False


def import_umap():
    """Import umap with numba's cache persistent and on for all of umap's and pynndescent's
    functions (LATENTLAB_NUMBA_CACHE_ALL=0: only those their authors marked cache=True).
    Where no cache folder can be written, umap is imported as it is (it compiles every time)."""
    if "NUMBA_CACHE_DIR" not in os.environ and _writable_dir(numba_cache_dir()):
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
        if "numba" in sys.modules:  # numba read its configuration when it was imported
            sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba / umap deprecation chatter at import
        import umap
    if os.environ.get("NUMBA_CACHE_DIR") and os.environ.get("LATENTLAB_NUMBA_CACHE_ALL", "1") != "0":
        _cache_all_numba_functions(("umap", "pynndescent"))
    return umap


def _cache_all_numba_functions(packages) -> None:
    """Turn on numba's on-disk cache for every jitted function defined at module level in these
    packages that has not compiled yet, so a fresh process loads UMAP's machine code instead of
    compiling it (see docs/performance.md). Numba keys each entry by the function's source file and
    its modification time, its signature and the CPU, so a stale entry is never used."""
    from numba.core.dispatcher import Dispatcher
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and not obj.signatures:
                try:
                    obj.enable_caching()
                except Exception:  # no place to cache it (e.g. a function defined in a notebook): it compiles
                    pass


def projection_params(method: str, n: int, dims: int, seed: int) -> dict:
    """Everything that decides the result, for n samples. Stored in the cache key."""
    if method == "umap":  # the version comes from the package metadata: importing umap takes seconds
        return {"n_components": dims, "n_neighbors": min(15, n - 1), "min_dist": 0.1, "random_state": seed,
                "n_epochs": 200 if n >= UMAP_SHORT_LAYOUT_FROM else 500,
                "neighbours": "exact" if n <= EXACT_NEIGHBOURS_MAX else "nndescent", "version": version("umap-learn")}
    import sklearn
    if method == "tsne":
        if dims > 3:
            raise ValueError(f"t-SNE projects to at most 3 dimensions, {dims} were asked for; use umap or pca")
        return {"n_components": dims, "perplexity": float(min(30.0, (n - 1) / 3)), "init": "pca",
                "random_state": seed, "version": sklearn.__version__}
    if method == "pca":
        return {"n_components": dims, "random_state": seed, "version": sklearn.__version__}
    raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")


def cache_key(z: np.ndarray, method: str, params: dict) -> str:
    return files.content_key({"method": method, "shape": list(z.shape), "dtype": str(z.dtype), "params": params,
                                  "pre_pca_dims": PRE_PCA_DIMS, "standardised": True}, z)


def compute_projection(z: np.ndarray, method: str, params: dict) -> np.ndarray:
    """The projection itself, uncached: (n, d) -> (n, n_components) float32."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    x = StandardScaler().fit_transform(z.astype(np.float64))
    dims, seed = params["n_components"], params["random_state"]
    if method == "pca":
        emb = PCA(n_components=min(dims, x.shape[1]), random_state=seed).fit_transform(x)
        if emb.shape[1] < dims:  # fewer latent dimensions than asked: pad with zeros
            emb = np.pad(emb, ((0, 0), (0, dims - emb.shape[1])))
        return emb.astype(np.float32)
    if x.shape[1] > PRE_PCA_DIMS:
        x = PCA(n_components=min(PRE_PCA_DIMS, len(x)), random_state=seed).fit_transform(x)
    args = {k: v for k, v in params.items() if k not in ("version", "neighbours")}
    if method == "tsne":
        from sklearn.manifold import TSNE
        emb = TSNE(**args).fit_transform(x)
    else:
        if params.get("neighbours") == "exact":
            args["precomputed_knn"] = exact_neighbours(x, params["n_neighbors"])
        umap = import_umap()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": seeded UMAP runs on one thread
            emb = umap.UMAP(**args).fit_transform(x)
    return np.asarray(emb, dtype=np.float32)


def exact_neighbours(x: np.ndarray, k: int, chunk: int = 1024, margin: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of x (Euclidean), each row's own index first at
    distance 0, as UMAP's own k-NN lists them. Returns (indices int64 (n, k), distances float32).
    Candidates come from float32 matrix products (fast, but off by ~1e-3 for near points); the
    k + margin best of each row are then measured again exactly, in float64, and sorted."""
    import torch
    x64 = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))
    x32 = x64.float()
    m = min(len(x), k + margin)
    idx, dist = [], []
    for start in range(0, len(x32), chunk):
        q = x64[start:start + chunk]
        rows = torch.arange(len(q))
        d = torch.cdist(q.float(), x32)
        d[rows, rows + start] = -1.0  # itself first, whatever duplicates there are
        cand = d.topk(m, largest=False).indices
        exact = (x64[cand] - q[:, None]).norm(dim=2)
        exact[:, 0] = -1.0
        nd, order = exact.topk(k, largest=False)
        idx.append(cand.gather(1, order))
        dist.append(nd.clamp_min_(0.0))
    return torch.cat(idx).numpy().astype(np.int64), torch.cat(dist).numpy().astype(np.float32)


def project(z: np.ndarray, method: str = "umap", dims: int = 2, seed: int = 0, cache_dir=None,
            quiet: bool = True) -> tuple[np.ndarray, dict]:
    """Project latents (n, d) to (n, dims) with umap, tsne or pca, through the cache in cache_dir
    (None: no cache). Returns (embedding float32, info {"method", "params", "cached", "path"})."""
    z = np.ascontiguousarray(z, dtype=np.float32)
    n = len(z)
    if n < max(MIN_SAMPLES, dims + 2):
        raise ValueError(f"a {dims}-d {method} projection needs at least {max(MIN_SAMPLES, dims + 2)} latents, "
                         f"there are {n}")
    params = projection_params(method, n, dims, seed)
    info = {"method": method, "params": params, "cached": False, "path": None}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"projection_{method}_{dims}d_{cache_key(z, method, params)}.npy"
        info["path"] = str(path)
        emb = files.load_cached_npy(path, lambda e: e.shape == (n, dims) and e.dtype == np.float32
                                        and np.isfinite(e).all())
        if emb is not None:
            info["cached"] = True
            if not quiet:
                print(f"{method} projection of {n} x {z.shape[1]} latents loaded from the cache ({path})")
            return emb, info
    if not quiet:
        print(f"computing the {method} projection of {n} x {z.shape[1]} latents to {dims}-d"
              f"{' (the first UMAP on a machine compiles numba code: up to a minute)' if method == 'umap' else ''}...",
              flush=True)
    emb = compute_projection(z, method, params)
    if path is not None:
        files.save_npy(emb, path)
    return emb, info


def view_2d(z: np.ndarray, method: str, seed: int = 0, cache_dir=None, quiet: bool = True) -> tuple[np.ndarray, dict | None]:
    """How a latent space is drawn: a space of at most 2 dimensions as it is (a 1-d one on a zero
    y-axis), a larger one projected to 2-D by `method` through the cache. Returns (xy (n, 2), the
    projection's info, None when drawn as is)."""
    if z.shape[1] <= 2:
        return np.pad(z, ((0, 0), (0, 2 - z.shape[1]))).astype(np.float32), None
    return project(z, method, 2, seed, cache_dir, quiet)


def axis_labels(info: dict | None) -> tuple[str, str]:
    if info is None:
        return "latent dimension 1", "latent dimension 2"
    name = METHOD_NAMES[info["method"]]
    return f"{name} 1", f"{name} 2"


def clustering_space(z: np.ndarray, space: str, umap_dims: int = 2, seed: int = 0, cache_dir=None,
                     quiet: bool = True) -> tuple[np.ndarray, dict | None]:
    """The features k-means runs on: the latents themselves (space "latent"), or their umap_dims-d
    UMAP reduction through the cache (space "umap"). Returns (features, the projection's info or None)."""
    if space == "latent":
        return z, None
    if space == "umap":
        return project(z, "umap", umap_dims, seed, cache_dir, quiet)
    raise ValueError(f"unknown clustering space {space!r}; choose latent or umap")
