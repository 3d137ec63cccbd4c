"""`make chaos`: SIGKILL each service, flush and restart Redis, restart PostgreSQL, all while instances start,
wait, resume and call webhooks; then check that nothing was lost or done twice, and print the figures.

`python -m tests.chaos [--seed N]` runs it (see `run.py` for the timeline, `verdict.py` for what is checked).
"""
