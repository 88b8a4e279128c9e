"""Utilities and custom ops shared by every other package (imports point into dnnlib, never out)."""
from .util import UserError  # noqa: F401
