"""Datasets: the on-disk format (writer), readers of other formats (sources), preprocessing, the built-in scenes, the catalog, the loader."""
