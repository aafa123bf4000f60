"""latentlab: the machinery behind the step scripts, one package per stage of the pipeline.

Imports run one way, down this list: sweep -> train, generate -> analysis -> settings (its flags:
training_flags) -> data, store -> cli and ranges, the figures (plots, image_grids), palettes,
caveats (and model/, the networks). cli holds the step's writer lock through store.locking,
imported where the lock is taken.
"""
