"""Reproduction of "Uncovering mesa-optimization algorithms in Transformers" (arXiv 2309.05858 v2)."""
