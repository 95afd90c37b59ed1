"""Constants the command line needs without loading the HTTP client (localflow/client.py)."""

DEFAULT_URL = "http://127.0.0.1:8080"
