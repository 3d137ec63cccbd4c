"""Condition nodes: they choose a branch."""
