"""Action nodes: they do something (send on a channel, call out, change data) and complete."""
