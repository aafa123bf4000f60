"""The files of output/: paths, safe loads, atomic writes, one validator per artifact kind, the run a
folder belongs to, one writer per folder (locks), and what an analysis step reads.
Imports cli, data (to re-read a training split) and model/."""
