"""Performance benchmarks of greenmon against its peers (see benchmarks/run.py and docs/benchmarks.md).

- ``farm``: a separate target farm process (asyncio, loopback only, optional TLS).
- ``peers``: the clients greenmon is compared with, each run in its own process.
- ``clients``: how one client run is launched and measured (wall, CPU, peak RSS).
- ``scenarios``: the scenario table (N, delay, hosts, TLS, workers).
- ``report``: Markdown tables, target verdicts and the machine description.
- ``daemon``: the daemon scenarios: greenmon's daemon on its timetable, scraped (``python -m benchmarks.daemon``).
- ``paced``: the daemon scenarios' latency reference, aiohttp on the same timetable.
- ``run``: the command line, ``python -m benchmarks.run``.
"""
