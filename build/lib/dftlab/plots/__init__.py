"""Figures drawn from measurements (matplotlib only), for callbacks and reports alike."""
