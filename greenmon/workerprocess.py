"""One worker process of ``--workers N`` (``python -m greenmon.workerprocess``): the checks of its
share (``workers.child``) and, in the daemon, its share of /metrics.

At 50,000 targets, one process rendering and compressing the whole
exposition is the daemon's bottleneck (1.55 million series: p50 1.4 s a
scrape, 388 MB, on one core). So each worker keeps a store of its own
targets, fed by its own results, and renders their lines when the parent
asks (``Render``), compressed here in a native thread: the workers do it at
once, on their own cores, and the parent only joins the pieces
(``exposition.SharedExposition``).
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402

from greenmon.cooperative import Slices, off_loop  # noqa: E402
from greenmon.exposition import Exposition  # noqa: E402
from greenmon.store import store_for  # noqa: E402
from greenmon.workers import child  # noqa: E402
from greenmon.workers.messages import Reload, Setup  # noqa: E402


def share_metrics(worker: child.Worker, setup: Setup) -> None:
    """In the daemon: a store of the share's numbers and its cached text, kept as the
    parent keeps its own (a reload brings the new share, settings and label names; a
    worker that replaces one that died starts from the parent's numbers)."""
    if not setup.metrics:
        return   # --once: the parent reports the results
    config = setup.config
    store = store_for(config, (), views=False)   # the parent keeps the views' history
    if setup.seed:   # set_targets keeps the numbers of the series it finds
        store.series = dict(setup.seed)
        store.set_monitor(config.monitor)   # and their history goes
    store.set_targets(config.enabled_targets, label_names=setup.label_names)
    exposition = Exposition(store, labels_once=True)   # memory per process: see exposition
    worker.result_listeners.append(store.observe)
    worker.breaker_listeners.append(store.breaker_changed)

    def reload(command: Reload) -> None:
        store.configure(command.config.metrics)
        store.set_monitor(command.config.monitor)
        store.set_targets(command.config.enabled_targets, Slices().tick,
                          label_names=command.label_names)

    def render() -> list:
        text = exposition.render()   # formats what changed, in slices that yield the loop
        return off_loop(text.share)   # tens of MB compressed: not on the loop

    worker.reload_listeners.append(reload)
    worker.render = render
    gevent.spawn(exposition.keep_fresh)


if __name__ == "__main__":
    sys.exit(child.main(share_metrics))
