"""Instance execution (SPEC 5, 6): the walker, one run per transaction, waits, events, migration, recovery.

`walker` is pure traversal; `run` executes nodes against `db_context` inside one transaction; the statements
themselves are in `kalcifer_engine.repo`, called with the connection of the transaction opened here; `starts`,
`resumes`, `events`, `lifecycle`, `migration` and `recovery` are the operations the EngineService RPCs call;
`replay` remembers an RPC's answer for its `request_id` inside the transaction an operation opens.
"""
