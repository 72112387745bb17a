"""How a project is configured: where it is, its settings, job files, schedules."""
