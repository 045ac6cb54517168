"""What the tests share: configs, servers, daemons, helper processes and waits.

- ``configs``: the one config builder (``config_text``) and the TOML writer under it.
- ``invalid_configs``: tables of invalid configs whose offending line carries a marker.
- ``helpers``: CLI runs, a fake clock, one sweep of a config, ``wait_until``.
- ``servers``, ``hostile_servers``, ``dns_server``, ``proxy_server``: the servers the
  checks talk to, all on 127.0.0.1.
- ``daemon_helpers``: Prometheus text read with prometheus_client's parser, a Daemon served
  in this process, the real daemon as a subprocess.
- ``load_helpers``: helper processes (a target farm, a /metrics scraper, a probed daemon, one
  sweep measured in a fresh process) and resource probes.
- ``prom_helpers``: the real Prometheus, promtool and Alertmanager binaries.

Nothing is imported here: ``python -m support.load_helpers`` runs before gevent patches.
"""
