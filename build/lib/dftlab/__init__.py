"""dftlab: fine-tuning language models with token-weighted objectives (SFT, DFT, focal, iw-SFT, ...)."""

__version__ = "0.1.0"
