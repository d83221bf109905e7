"""Commands: project (filled in by its own work)."""
