"""The files of output/: paths, safe loads, atomic writes, one validator per artifact kind, the run a
folder belongs to, one writer per folder (locks), what an analysis step reads, and what steps 5 and 6 hand on.
Imports cli, data (to re-read a training split) and model/."""
