"""LocalFlow benchmark (issue 2, item 10): `uv run python bench/run.py`."""
