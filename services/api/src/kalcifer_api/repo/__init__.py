"""SQLAlchemy access for the API service; every tenant-owned query takes the tenant id."""
