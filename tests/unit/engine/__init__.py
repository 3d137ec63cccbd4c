"""Unit tests of the engine's node types, graphs and graph validation."""
