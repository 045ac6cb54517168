"""The settings of each config section, with their defaults named next to them.

Plain frozen values on the model floor: the breaker, the checker and the metrics store read
them without knowing the config file (config.py validates and builds them).
"""

from __future__ import annotations

from dataclasses import dataclass

from greenmon import __version__

ADDRESS_MODES = ("first", "all")     # which addresses of a name a check contacts
IP_VERSIONS = ("any", "4", "6")      # which address families it uses
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class MonitorSettings:
    concurrency: int = 1000
    timeout: float = 10.0
    interval: float = 60.0
    location: str = ""           # where this instance probes from: build_info's location label
    max_body_bytes: int = 1024 * 1024
    verify_tls: bool = True
    ca_file: str = ""
    follow_redirects: bool = True
    user_agent: str = f"greenmon/{__version__}"
    slo_p95_seconds: float = 2.0
    state_file: str = ""
    min_cert_days: float = 0.0   # > 0: a certificate expiring sooner fails the check
    slo_availability: float = 0.999  # the availability objective (also per target)
    slo_window_days: float = 30.0    # the error budget's window (also per target)
    degraded_latency: float = 0.0    # > 0: a success slower than this is degraded (also per target)
    addresses: str = "first"         # "all": every address of the name, each checked (also per target)
    ip_version: str = "any"          # "4" or "6": only that family's addresses (also per target)
    history: int = 60                # recent outcomes kept per target (status page, /api/history)
    proxy: str = ""              # http://host:port for every target (HTTPS through CONNECT)
    proxy_env: bool = False      # true: the proxy of HTTP_PROXY/HTTPS_PROXY/NO_PROXY instead
    client_cert: str = ""        # PEM certificate presented to targets that ask (mTLS)
    client_key: str = ""         # its key

    def verification(self, verify_tls: bool | None = None, ca_file: str | None = None) -> bool | str:
        """How TLS is verified by a check, a token request or a discovery fetch whose own
        ``verify_tls`` and ``ca_file`` are these (None: not written, this section's apply):
        False (no checks), True (the default CAs) or a CA file added to them."""
        verify_tls = self.verify_tls if verify_tls is None else verify_tls
        ca_file = self.ca_file if ca_file is None else ca_file
        return ca_file if verify_tls and ca_file else verify_tls

    def degraded_after(self, degraded_latency: float | None) -> float:
        """The degraded threshold of a target whose own ``degraded_latency`` is this (None:
        not written, this section's applies); 0: off."""
        return self.degraded_latency if degraded_latency is None else degraded_latency


@dataclass(frozen=True)
class RetrySettings:
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    jitter: bool = False


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 3
    recovery_timeout: float = 300.0


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "0.0.0.0:9715"
    web_config_file: str = ""   # exporter-toolkit web config: TLS and basic auth (webconfig)


@dataclass(frozen=True)
class MetricsSettings:
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    per_target_histograms: bool = True
    phase_gauges: bool = True    # false: no greenmon_check_phase_seconds (5 series per target)
    # false: error and retry counters only for the classes that happened to the target (10
    # series of zeros fewer per healthy target)
    all_error_classes: bool = True
