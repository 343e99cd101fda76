"""Reproduction of "The least-control principle for local learning at equilibrium"."""
