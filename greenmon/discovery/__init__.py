"""Discovery: targets from where they already live (OpenAPI documents, Prometheus file_sd files).

``values`` holds what a source yields, ``documents`` reads and parses JSON
and YAML (off the event loop), ``openapi`` and ``file_sd`` turn a parsed
document into targets (pure), ``sources`` is the config side (the
``[[openapi]]`` and ``[[file_sd]]`` entries, merging their targets with
``[[targets]]``); the network side is ``loading`` (fetching documents, loading
every source at start-up) and ``live`` (re-reading them in the daemon).
"""
