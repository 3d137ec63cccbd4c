"""Timers: armed in Redis (one arq job per time bucket), claimed and fired from PostgreSQL, swept when lost."""
