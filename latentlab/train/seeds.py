"""The training's random streams, each drawn from --seed in one named way. The arithmetic is part of
the results (changing it changes every trained weight); the strides are primes, so that the streams
of different (seed, epoch, rank) do not meet."""
RUN, EPOCH = 1_000_003, 1009
VALIDATION_OFFSET, RECORD_OFFSET = 7919, 104_729


def validation(seed: int) -> int:
    """The split of the training items into training and validation."""
    return seed + VALIDATION_OFFSET


def record(seed: int) -> int:
    """The validation images the training film records."""
    return seed + RECORD_OFFSET


def shuffle(seed: int) -> int:
    """The order of the training items, epoch by epoch (DistributedSampler adds the epoch)."""
    return seed * RUN


def epoch(seed: int, epoch: int, rank: int) -> int:
    """One process's draws in one epoch: the denoiser's noise and the VAE's samples."""
    return seed * RUN + epoch * EPOCH + rank


def umap_edges(seed: int, epoch_: int, rank: int) -> int:
    """The edges the UMAP loss draws in one process's epoch."""
    return epoch(seed, epoch_, rank) + RECORD_OFFSET
