"""Runnable examples: ``python -m fastmix.examples.<name>``. They may need extra packages (see each module)."""
