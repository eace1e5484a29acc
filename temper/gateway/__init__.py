"""The gateway: one OpenAI-compatible front for several back ends, with routing, caches, cost and limits.

`temper gateway --config gateway.yaml` runs it; `create_gateway(load_config(path))` builds the ASGI app.
Modules: config.py (the YAML), backends.py (replicas, health, retries, fallbacks), routing/ (one policy per file),
cache.py + semantic.py (exact and semantic caches), store.py (SQLite or Redis state), limits.py (keys, budgets,
rate limits), metrics.py, app.py (the HTTP front), cli.py.
"""
