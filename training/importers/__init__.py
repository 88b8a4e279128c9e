"""Importers for checkpoints written by other code: the official PyTorch port and the original TF code."""
