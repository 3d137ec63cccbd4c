"""Trigger nodes: where participants enter a flow."""
