"""Step 7: samplers fitted on the latents, interpolation and traversal, and their scores (Frechet
distance, precision and recall in an in-domain classifier's features). Imports store, data, analysis and model/."""
