"""Wait nodes: the path parks until a duration passes, a date comes or an event arrives."""
