"""The public API, one module per method; ``fastmix/__init__.py`` re-exports it."""
