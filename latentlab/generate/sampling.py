"""Generation from a trained bottleneck: sample new latents, interpolate between two images, and
traverse the latent space (the 2-d manifold, or one dimension at a time of an N-d one).

Everything here takes tensors (or arrays) and returns them; viz_generation.py finds the files and
draws; scores.py scores the samplers.
Latents are float32 (n, latent_size) on the CPU; images are float (n, C, H, W) in [0, 1].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from latentlab.store import files
from latentlab.analysis.flags import BATCH_SIZE


# ---------------------------------------------------------------- decoding in batches
@torch.no_grad()
def decode_latents(model, z: torch.Tensor, device, batch: int = BATCH_SIZE) -> torch.Tensor:
    """float latents (n, latent_size) -> images (n, C, H, W) in [0, 1], float32 on the CPU."""
    model.eval()
    return torch.cat([model.decode(part.float().to(device)).float().cpu() for part in z.split(batch)])


# ---------------------------------------------------------------- sampling
def fit_gaussian(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (N,) and full covariance (N, N) of latents z (n, N), in float64 (maximum likelihood)."""
    z = z.double()
    mean = z.mean(0)
    centred = z - mean
    return mean, centred.T @ centred / max(len(z), 1)


def sample_gaussian(mean: torch.Tensor, cov: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws from N(mean, cov) as float32 (n, N). The square root of cov comes from its
    eigendecomposition, so a singular covariance (a dead latent unit, fewer samples than
    dimensions) still works, where a Cholesky factorisation would fail."""
    evals, evecs = torch.linalg.eigh(cov.double())
    root = evecs * evals.clamp(min=0).sqrt()  # (N, N): root @ root.T == cov
    eps = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    return (mean.double() + eps @ root.T).float()


SAMPLERS = ("gaussian", "gmm", "prior")
NUM_SCORED = 10_000  # generated images scored per sampler (viz_generation.py --num_scored, the sweep)
GMM_COMPONENTS = 10  # components of the gmm sampler (viz_generation.py --gmm_components, the sweep)
# latents a mixture is fitted on (a seeded sample): EM's cost grows with n * N**2 per component, and
# each component's full covariance needs enough of them (30 components on 20,000 Fashion-MNIST latents
# are worse than on 54,000: docs/performance.md)
GMM_FIT_PER_COMPONENT = 2_000
GMM_FIT_MIN = 20_000


def mixture_fit_size(components: int) -> int:
    """How many latents (at most) a mixture of `components` is fitted on."""
    return max(GMM_FIT_MIN, GMM_FIT_PER_COMPONENT * components)


def fit_mixture(z: np.ndarray, sampler: str, components: int, seed: int) -> np.ndarray:
    """A Gaussian (sampler "gaussian") or a full-covariance Gaussian mixture of `components`
    (sklearn's GaussianMixture, seeded) fitted on latents z (n, N); returned packed, one row per
    component: (K, 1 + N + N*N) float64, [weight, mean (N), covariance (N*N)]."""
    n, dim = z.shape
    if sampler == "gaussian":
        mean, cov = fit_gaussian(torch.from_numpy(z))
        return np.concatenate([[1.0], mean.numpy(), cov.numpy().ravel()])[None]
    from sklearn.mixture import GaussianMixture
    if components > n:
        raise ValueError(f"a mixture of {components} components needs at least as many latents; the training split gives {n}")
    fit_max = mixture_fit_size(components)
    pick = np.random.default_rng(seed).permutation(n)[:fit_max] if n > fit_max else slice(None)
    gm = GaussianMixture(components, covariance_type="full", random_state=seed).fit(z[pick].astype(np.float64))
    return np.concatenate([gm.weights_[:, None], gm.means_, gm.covariances_.reshape(components, -1)], axis=1)


def fitted_sampler(z: np.ndarray, sampler: str, components: int, seed: int, cache_dir=None) -> np.ndarray:
    """fit_mixture through the content-keyed cache in cache_dir (None: no cache): the same latents
    and settings are fitted once."""
    import sklearn
    settings = {"sampler": sampler, "seed": seed, "sklearn": sklearn.__version__,
                **({"components": components, "fit_max": mixture_fit_size(components)} if sampler == "gmm" else {})}
    dim = z.shape[1]
    path = None if cache_dir is None else Path(cache_dir) / f"sampler_{sampler}_{files.content_key(settings, z)}.npy"
    packed = files.load_cached_npy(path, lambda a: a.ndim == 2 and a.shape[1] == 1 + dim + dim * dim
                                   and a.dtype == np.float64 and np.isfinite(a).all())
    if packed is None:
        packed = fit_mixture(z, sampler, components, seed)
        if path is not None:
            files.save_npy(packed, path)
    return packed


def draw(sampler: str, packed: np.ndarray | None, latent_size: int, n: int, seed: int, prior=None) -> torch.Tensor:
    """n latents (n, N) float32: from the model family's prior (model.autoencoder.Family.prior), or
    from the packed Gaussian or mixture (fitted_sampler); seeded."""
    g = torch.Generator().manual_seed(seed)
    if sampler == "prior":
        return prior(n, latent_size, g)
    weights, means = packed[:, 0], packed[:, 1:1 + latent_size]
    covs = packed[:, 1 + latent_size:].reshape(len(packed), latent_size, latent_size)
    if len(packed) == 1:
        return sample_gaussian(torch.from_numpy(means[0]), torch.from_numpy(covs[0]), n, g)
    from sklearn.mixture import GaussianMixture
    gm = GaussianMixture(len(packed), covariance_type="full", random_state=seed)
    gm.weights_, gm.means_, gm.covariances_ = weights / weights.sum(), means, covs
    z, _ = gm.sample(n)  # grouped by component: shuffled below, so that any first m are a fair sample
    return torch.from_numpy(z[torch.randperm(n, generator=g).numpy()]).float()


def sampler_source(sampler: str, packed: np.ndarray | None, n_fit: int) -> str:
    """Where sampled latents come from, in words (the title of the figure of samples)."""
    if sampler == "prior":
        return "drawn from the model's prior"
    if sampler == "gaussian":
        return f"drawn from a Gaussian fitted to the latents of the {n_fit} training images (mean, full covariance)"
    used = min(n_fit, mixture_fit_size(len(packed)))
    sample = f"{used} of the {n_fit} training images" if used < n_fit else f"the {n_fit} training images"
    return f"drawn from a {len(packed)}-component Gaussian mixture fitted to the latents of {sample}"


# ---------------------------------------------------------------- interpolation
def interpolate_latents(za: torch.Tensor, zb: torch.Tensor, steps: int) -> torch.Tensor:
    """(N,), (N,) -> (steps, N) on the straight line from za (t = 0) to zb (t = 1)."""
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)[:, None]
    return ((1 - t) * za.double() + t * zb.double()).float()


def pick_pair(labels: torch.Tensor, index: list[int] | None, seed: int) -> tuple[int, int]:
    """The two test images to interpolate between: --index A B, or A and a random B, or, with no
    --index, two at random by seed (of different classes where there are two classes)."""
    n = len(labels)
    index = list(index or [])
    g = torch.Generator().manual_seed(seed)
    if n < 2 and len(index) < 2:
        raise ValueError("interpolation needs at least two test images; the test data has fewer")
    a = index[0] if index else int(torch.randint(n, (1,), generator=g))
    if len(index) >= 2:
        return a, index[1]
    others = torch.nonzero(labels != labels[a]).flatten()
    if len(others) == 0:
        others = torch.tensor([i for i in range(n) if i != a])
    return a, int(others[torch.randint(len(others), (1,), generator=g)])


# ---------------------------------------------------------------- traversal
def manifold_grid(z2: torch.Tensor, size: int, low_pct: float = 1.0, high_pct: float = 99.0):
    """A size x size grid over the region the 2-d latents z2 (n, 2) occupy: from the low_pct-th to
    the high_pct-th percentile of each dimension. Returns (grid (size*size, 2), xs (size,), ys (size,));
    row r of the grid holds ys[size - 1 - r] (top row = largest latent 2, as a plot's y axis),
    column c holds xs[c]."""
    if z2.shape[1] != 2:
        raise ValueError(f"the manifold grid needs 2-d latents, got {z2.shape[1]}")
    q = torch.tensor([low_pct / 100, high_pct / 100], dtype=torch.float64)
    lo_hi = torch.quantile(z2.double(), q, dim=0)  # (2 quantiles, 2 dims)
    xs = torch.linspace(lo_hi[0, 0].item(), lo_hi[1, 0].item(), size, dtype=torch.float64)
    ys = torch.linspace(lo_hi[0, 1].item(), lo_hi[1, 1].item(), size, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys.flip(0), xs, indexing="ij")  # (size, size) each, row-major from the top
    return torch.stack([gx.flatten(), gy.flatten()], dim=1).float(), xs.float(), ys.float()


def top_variance_dims(z: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k latent dimensions of z (n, N) with the largest variance, largest first."""
    var = z.double().var(dim=0, unbiased=False)
    return torch.argsort(var, descending=True, stable=True)[:min(k, z.shape[1])]


def traversal_latents(z0: torch.Tensor, dims: torch.Tensor, std: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """z0 (N,) moved along one dimension at a time: (len(dims), len(offsets), N), where entry
    [i, j] is z0 with dimension dims[i] shifted by offsets[j] * std[dims[i]]."""
    z = z0.float().expand(len(dims), len(offsets), -1).clone()
    for i, d in enumerate(dims.tolist()):
        z[i, :, d] += offsets.float() * std[d].float()
    return z


def traversal_offsets(max_std: float, steps: int) -> torch.Tensor:
    """steps offsets, evenly spaced from -max_std to +max_std (0 among them when steps is odd)."""
    return torch.linspace(-max_std, max_std, steps)


def class_name(class_names: list, label) -> str:
    """The name of a class label (its number where the test data names fewer classes)."""
    k = int(label)
    return str(class_names[k]) if 0 <= k < len(class_names) else str(k)


def grid_shape(n: int) -> tuple[int, int]:
    """rows, columns of a near-square grid of n images (columns >= rows)."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def share_outside(z2: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> float:
    """Share of the points z2 (n, 2) outside the grid's box: the figure says how many it leaves out."""
    inside = ((z2[:, 0] >= xs[0]) & (z2[:, 0] <= xs[-1]) & (z2[:, 1] >= ys[0]) & (z2[:, 1] <= ys[-1]))
    return float(1.0 - inside.double().mean()) if len(z2) else 0.0
