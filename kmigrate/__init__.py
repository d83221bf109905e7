"""kmigrate: declarative, journaled, crash-safe migrations of Kintone record data."""

# The one home of the version (pyproject.toml reads it from here): a literal, because asking
# importlib.metadata costs every command ~30 ms at start-up.
__version__ = "0.1.0"
