"""Commands: run (filled in by its own work)."""
