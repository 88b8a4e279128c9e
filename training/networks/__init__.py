"""The networks: building blocks (layers, attention), mapping, synthesis, discriminator, their typed configs."""
from training.networks.generator import Discriminator, Generator  # noqa: F401
