"""greenmon: a gevent-based HTTP endpoint poller with honest error classes.

The public names are loaded lazily so that ``import greenmon`` does not
import requests or ssl before the command-line entry point has had a chance
to monkey-patch with gevent.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["ConfigError", "Config", "MonitorResult", "load_config", "sweep", "__version__"]

_EXPORTS = {
    "ConfigError": "greenmon.schema",
    "Config": "greenmon.config",
    "load_config": "greenmon.config",
    "MonitorResult": "greenmon.result",
    "sweep": "greenmon.engine",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'greenmon' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(__all__)
