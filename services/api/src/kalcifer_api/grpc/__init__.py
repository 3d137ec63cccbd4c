"""Servicers of the public API: thin translations proto -> domain -> proto."""
