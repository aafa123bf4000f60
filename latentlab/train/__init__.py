"""Step 1: the training loop, the run (load, write the test data and PCA, train both models), torchrun,
checkpoints and resume, the UMAP loss, and what each epoch records (CSV log, animations, TensorBoard).
Imports store, data and analysis."""
