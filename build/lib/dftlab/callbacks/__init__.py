"""Lightning callbacks of a training run: token-probability histograms, preemption."""
