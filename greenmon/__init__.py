"""greenmon: a gevent-based HTTP endpoint poller with honest error classes.

The public names are loaded lazily so that ``import greenmon`` does not
import requests or ssl before the command-line entry point has had a chance
to monkey-patch with gevent.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["ConfigError", "Config", "MonitorResult", "load_config", "sweep", "__version__"]

_EXPORTS = {   # public name: (module, its name there)
    "ConfigError": ("greenmon.schema", "ConfigError"),
    "Config": ("greenmon.config", "Config"),
    "load_config": ("greenmon.discovery.loading", "loaded_config"),   # discovery sources loaded
    "MonitorResult": ("greenmon.result", "MonitorResult"),
    "sweep": ("greenmon.engine", "sweep"),
}


def __getattr__(name: str):
    export = _EXPORTS.get(name)
    if export is None:
        raise AttributeError(f"module 'greenmon' has no attribute {name!r}")
    module, attribute = export
    return getattr(importlib.import_module(module), attribute)


def __dir__():
    return sorted(__all__)
