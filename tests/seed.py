"""The seed README's examples, verbatim: the contract the tests hold LocalFlow to."""

SEED_SCHEDULE = {
    "name": "Health Check",
    "cron_expr": "*/5 * * * *",
    "task_type": "http",
    "payload": {"url": "http://localhost:8080/health", "method": "GET"},
    "enabled": True,
}
