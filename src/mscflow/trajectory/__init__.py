"""Monocyte to macrophage trajectories (PAGA, diffusion pseudotime) per tissue."""
