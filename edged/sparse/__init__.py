"""Masks, the sparse-delta parametrisation, N:M pruning."""
