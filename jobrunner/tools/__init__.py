"""Tools: registration (`api`), discovery (`registry`), built-ins, and dispatch."""
