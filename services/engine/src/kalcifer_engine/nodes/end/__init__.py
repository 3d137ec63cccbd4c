"""End nodes: reaching one ends the whole instance (other paths and their waits are cancelled)."""
