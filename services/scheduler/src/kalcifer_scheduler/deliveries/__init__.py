"""The `deliveries` queue: pending deliveries sent once through the tenant's provider, retried with backoff."""
