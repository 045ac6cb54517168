"""greenmon's steady state: repeated sweeps of one long-lived engine, as the daemon runs them.

``python -m benchmarks.steady --config F --sweeps K`` prints one JSON line:
the mean wall time and CPU of sweeps 2..K (the first opens the connections;
the others reuse them, as every sweep after the first does in the daemon),
with every per-check piece of greenmon's work included: breaker, prober,
classification, result and the Prometheus store.
"""

from __future__ import annotations

import greenmon.__main__  # noqa: F401  (patches gevent and picks the resolver as the command does)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

from greenmon.config import load_config  # noqa: E402
from greenmon.engine import Engine  # noqa: E402
from greenmon.store import store_for  # noqa: E402
from greenmon.limits import tune_runtime  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steady")
    parser.add_argument("--config", required=True)
    parser.add_argument("--sweeps", type=int, default=4)
    args = parser.parse_args()
    config = load_config(args.config)
    engine = Engine(config)
    store = store_for(config, config.enabled_targets)
    engine.listeners.append(store.observe)
    tune_runtime()  # as the command does
    walls, cpus, ok = [], [], 0
    for index in range(max(2, args.sweeps)):
        started_cpu, started = cpu_s(), time.perf_counter()
        results = engine.sweep()
        if index:  # the first sweep opens the connections: not the steady state
            walls.append(time.perf_counter() - started)
            cpus.append(cpu_s() - started_cpu)
        ok = sum(r.ok for r in results)
    engine.close()
    print(json.dumps({"ok": ok, "wall_s": sum(walls) / len(walls), "cpu_s": sum(cpus) / len(cpus)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
