"""Running one job: the runner, the session loop, its guards, the end of a run."""
