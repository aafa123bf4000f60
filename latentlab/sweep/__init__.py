"""The latent-size sweep: one job per (dataset, family, size, seed), the launchers (local, submitit),
and the sweep's tables and figures. Imports every other package."""
