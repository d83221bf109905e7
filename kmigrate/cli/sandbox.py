"""Commands: sandbox (filled in by its own work)."""
