"""Discovery: targets from where they already live (OpenAPI documents, Prometheus file_sd files).

``values`` holds what a source yields, ``documents`` reads and parses JSON
and YAML (off the event loop), ``openapi`` and ``file_sd`` turn a parsed
document into targets (pure), ``sources`` is the config side (the
``[[openapi]]`` and ``[[file_sd]]`` entries, loading them, merging their
targets with ``[[targets]]``), and ``live`` re-reads them in the daemon.
"""
