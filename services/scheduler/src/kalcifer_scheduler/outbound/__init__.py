"""Outbound HTTP (SPEC 6.10): the one way the scheduler calls a tenant's endpoint, and the calls of call waits."""
