"""PixPerfect: pixel-space refiners that remove latent-diffusion editing seams."""

__version__ = "0.1.0"
