"""The shared pieces of jobrunner's file formats: strict models, durations, located errors,
line positions in TOML and JSON text, and the `[mcp.NAME]` declaration (used by the
settings and by the tools that start servers)."""
