"""Channel actions: each creates a delivery that the scheduler's delivery queue sends (SPEC 7)."""
