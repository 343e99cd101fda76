"""Reproduction of "Gated recurrent neural networks discover attention" (Zucchet et al., 2024)."""
