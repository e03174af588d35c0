"""Data: photo sources, random-crop streams and the held-out artifact set."""
