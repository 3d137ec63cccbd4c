"""Every SQL statement of the engine, by aggregate, on the caller's `AsyncConnection` and transaction (SPEC 9).

`instances` (flow_instances), `steps` (execution_steps: a run's write), `waits`, `events`, `deliveries`,
`customers` (customers and the marketing rows nodes write or read: conversions, ab_assignments, segments),
`flows` (the flows and flow_versions the engine reads), `node_types` (tenants' webhook node types) and
`templates` (which message templates a tenant has, for validation);
`connection` is what they share (the asyncpg driver under a connection, the errors a statement raises).

No ORM identity map, and nothing here commits or opens a transaction except `node_types`, whose writes are
their own transaction, and `templates`, a read of its own: `runtime` opens the transaction, passes its
connection here and decides what to do.
"""
