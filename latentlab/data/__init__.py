"""Datasets: each source (sources.SOURCES, one entry per named dataset; a folder of images) as uint8
tensors with class names, and the decoded, content-keyed, memory-mappable cache of image folders.
Imports cli and store alone."""
