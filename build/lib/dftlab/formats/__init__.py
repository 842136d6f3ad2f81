"""File formats of a run directory: written by callbacks during training, read by reports after it."""
