"""Datasets: the on-disk format (writer), readers of other formats (sources), preprocessing, the built-in scenes, the catalog, the loader."""

SCENES = "scenes"      # the built-in dataset: rendered by ensure_scenes(), never by a reader
