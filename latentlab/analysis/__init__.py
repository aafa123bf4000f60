"""Steps 2 to 6 and the explorer: a model over images (inference), reconstruction and cluster scores,
the probes, projections, the PCA baseline and the explorer page. Imports store and data."""
