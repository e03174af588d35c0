"""Training: the LightningModule, image grids and the ``train`` entry point."""
