"""Numba CPU backend: SRP window histograms and the priority-stack engine."""
