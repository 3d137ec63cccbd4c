"""The scheduler's gRPC surface (SchedulerService)."""
