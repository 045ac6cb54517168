"""Hand mutation check of greenmon's decision modules: does the suite fail when they break?

Each mutant below is one small, plausible bug in errors, breaker, prober, targets, urls, certfiles, auth,
store, metric table, oauth2 or discovery (the modules that decide what an operator is told), with the test files that should
catch it. For each mutant this script applies it to a copy of the repository in a temporary
directory, runs those test files there (``pytest -x``: the first failure kills the mutant),
and puts the copy's module back. The checkout is never written: greenmon/ here stays as it
is whatever happens (a Ctrl-C included), and the script checks that it did.

    python3 tests/mutations.py                 # every mutant (about 10 minutes on 2 cores)
    python3 tests/mutations.py --list          # the mutants, and whether each still applies
    python3 tests/mutations.py --only B1 P2    # some of them
    python3 tests/mutations.py --tests tests/  # against other test files (here: all of them)

A mutant "survives" when its test files all pass: either the suite cannot see that bug (add
a test), or the change makes no difference anyone can observe (say why in its note). Exit
status: 0 when no mutant survived, 1 otherwise, 2 when the unmutated copy already fails,
130 when interrupted.
Keep the list honest as the code changes: a mutant whose original text is gone is reported
as stale, not skipped silently. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("greenmon", "tests", "deploy", "benchmarks", "docs", "README.md", "setup.cfg", "setup.py")
PER_RUN_TIMEOUT_S = 900.0

ERRORS = ("tests/test_errors.py", "tests/test_check.py")
BREAKER = ("tests/test_breaker.py", "tests/test_engine.py")
CHECK = ("tests/test_check.py", "tests/test_errors.py", "tests/test_auth.py")
TARGETS = ("tests/test_targets.py", "tests/test_config.py", "tests/test_fuzz_config.py",
           "tests/test_timetable.py", "tests/test_secrets.py")
AUTH = ("tests/test_auth.py", "tests/test_secrets.py")
EXPORTER = ("tests/test_metrics.py", "tests/test_web.py")
OAUTH2 = ("tests/test_oauth2.py",)
DISCOVERY = ("tests/test_discovery.py",)


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str          # path from the repository root
    old: str             # must occur exactly once in the module
    new: str
    what: str            # the bug, as an operator would meet it
    tests: tuple[str, ...]
    note: str = ""       # for a known survivor: why it does not matter


MUTANTS = [
    # --- errors: classes, details and what is retried ---
    Mutant("E1", "greenmon/errors.py", "frozenset({429, 502, 503, 504})", "frozenset({429, 502, 504})",
           "503 is not retried", ERRORS),
    Mutant("E2", "greenmon/errors.py", "if self.error_class == TIMEOUT:\n            return True",
           "if self.error_class == TIMEOUT:\n            return False", "timeouts are not retried", ERRORS),
    Mutant("E3", "greenmon/errors.py", 'return self.detail not in ("tls", "cert_expiring")', "return True",
           "TLS failures are retried", ERRORS),
    Mutant("E4", "greenmon/errors.py", "AUTH_STATUS = frozenset({401, 403})", "AUTH_STATUS = frozenset({401})",
           "403 is an http failure, not auth", ERRORS),
    Mutant("E5", "greenmon/classify.py", 'return Failure(CONNECTION, "refused", "connection refused")',
           'return Failure(CONNECTION, "reset", "connection refused")', "refused reported as reset", ERRORS),
    Mutant("E6", "greenmon/classify.py",
           "        if isinstance(item, ssl.SSLCertVerificationError):\n",
           "        if False:\n",
           "a rejected certificate no longer says why (self-signed, expired, host name)", ERRORS),
    Mutant("E7", "greenmon/classify.py", " and not _is_timeout(item)", "",
           "a TLS read that timed out is reported as a TLS failure (not retried)", ERRORS),
    Mutant("E8", "greenmon/classify.py", 'return Failure(CONTENT, "redirects", "too many redirects")',
           'return Failure(CONNECTION, "redirects", "too many redirects")',
           "a redirect loop is a connection failure (and retried)", ERRORS),
    Mutant("E9", "greenmon/classify.py",
           'return Failure(CONNECTION, "protocol", "response ended before the announced body length")',
           'return Failure(CONNECTION, "closed", "response ended before the announced body length")',
           "a body cut short reported as a closed connection", ERRORS),
    # --- breaker: pure transitions ---
    Mutant("B1", "greenmon/breaker.py", "0 <= now - state.opened_at < settings.recovery_timeout",
           "now - state.opened_at < settings.recovery_timeout",
           "a clock that went backwards keeps an open breaker skipping", BREAKER),
    Mutant("B2", "greenmon/breaker.py", "now - state.opened_at < settings.recovery_timeout",
           "now - state.opened_at <= settings.recovery_timeout",
           "the trial comes one instant after recovery_timeout", BREAKER),
    Mutant("B3", "greenmon/breaker.py", "failures >= settings.failure_threshold",
           "failures > settings.failure_threshold", "the breaker opens one failure late", BREAKER),
    Mutant("B4", "greenmon/breaker.py", "if trial or failures >= settings.failure_threshold",
           "if failures >= settings.failure_threshold",
           "a failed half-open trial below the threshold closes the breaker", BREAKER),
    Mutant("B5", "greenmon/breaker.py", "    if failure is None:\n        return BreakerState()",
           "    if failure is None:\n        return replace(state, failures=0)",
           "a successful trial leaves the breaker open", BREAKER),
    Mutant("B6", "greenmon/breaker.py", "return BreakerState(OPEN, failures, now, failure)",
           "return BreakerState(OPEN, failures, state.opened_at or now, failure)",
           "a failed trial does not restart the recovery timeout (a trial at every turn)", BREAKER),
    # --- one check: attempts, retries, the judges ---
    Mutant("P1", "greenmon/check.py", "max_tries=retry.retries + 1", "max_tries=retry.retries",
           "one retry fewer than configured", CHECK),
    Mutant("P2", "greenmon/check.py", "return self.stopping or not error.attempt.failure.retryable",
           "return not error.attempt.failure.retryable", "retries go on after a stop (SIGTERM)",
           CHECK + ("tests/test_faults.py",)),
    Mutant("P3", "greenmon/judges.py", '    ("expect_status", _status),\n',
           '    ("max_body_bytes", _body_size),\n    ("expect_status", _status),\n',
           "a large 503 page is body_too_large (content, not retried)", CHECK),
    Mutant("P14", "greenmon/judges.py",
           '            return Failure(CONTENT, "expect_header", f"expect_header: no {name} header")\n',
           "            continue\n", "a header that expect_header asks for may be missing", CHECK),
    Mutant("P15", "greenmon/judges.py", "if value is not None and pattern.search(value):",
           "if value is not None and pattern.match(value):",
           "reject_header matches only at the start of the value", CHECK),
    Mutant("P4", "greenmon/judges.py", "if expect.reject_body is None or not expect.reject_body.search(seen.text):",
           "if True:", "reject_body is ignored", CHECK),
    Mutant("P5", "greenmon/judges.py", "expect.body.search(seen.text)",
           "expect.body.match(seen.text)", "expect_body must match at the start of the body",
           CHECK),
    Mutant("P6", "greenmon/check.py", "            self.credentials.refresh(step.request.auth, sent)\n", "",
           "no re-read of the token after a 401/403", CHECK),
    Mutant("P7", "greenmon/check.py", "send = self._attempt if trial else self._attempt_with_retries",
           "send = self._attempt_with_retries", "a half-open trial is retried", CHECK + BREAKER),
    Mutant("P8", "greenmon/settings.py", "return ca_file if verify_tls and ca_file else verify_tls",
           "return verify_tls", "ca_file is ignored", CHECK),
    Mutant("P9", "greenmon/check.py", "timeout=sent.timeout or monitor.timeout",
           "timeout=monitor.timeout", "a target's own timeout is ignored", CHECK),
    Mutant("P10", "greenmon/check.py", "jitter=backoff.full_jitter if retry.jitter else None",
           "jitter=None", "jitter = true is ignored", CHECK),
    Mutant("P11", "greenmon/check.py", "factor=retry.backoff, max_value=retry.max_backoff",
           "factor=retry.backoff", "max_backoff is ignored", CHECK),
    Mutant("P12", "greenmon/check.py", "and step.request.auth is not None and step.request.auth.refreshable",
           "and step.request.auth is not None", "an inline token is tried twice on every 401", CHECK),
    Mutant("P13", "greenmon/check.py", "follow_redirects=(monitor.follow_redirects if",
           "follow_redirects=(True if", "follow_redirects = false is ignored", CHECK),
    # --- flows: a target of several steps ---
    Mutant("F1", "greenmon/result.py", "latency = sum(timed) if timed else None",
           "latency = timed[-1] if timed else None", "a flow's latency is its last step's only",
           ("tests/test_flows.py",)),
    Mutant("F2", "greenmon/check.py",
           '                return Failure(CONTENT, "extract", f"extract: {item.variable} ({item.source}) not found")\n',
           "                continue\n", "a value that is not there is sent as {{name}}",
           ("tests/test_flows.py",)),
    Mutant("F3", "greenmon/check.py", "        flow = Flow() if target.steps else None\n",
           "        flow = self.__dict__.setdefault('_flow', Flow()) if target.steps else None\n",
           "one flow context for every check: cookies and values carry over between checks",
           ("tests/test_flows.py",)),
    Mutant("F4", "greenmon/engine.py",
           "return frozenset(a.header_name for a in config.auth.values()) | filled",
           "return frozenset(a.header_name for a in config.auth.values())",
           "a header filled with a token follows a redirect to another origin", ("tests/test_flows.py",)),
    Mutant("F5", "greenmon/check.py", "if sent.follow_redirects is None\n", "if True\n",
           "a step's or target's follow_redirects = false is ignored", ("tests/test_flows.py",)),
    # --- degraded: slow but up ---
    Mutant("G1", "greenmon/result.py", "degraded=(failure is None and 0 < degraded_after < (latency or 0.0))",
           "degraded=False", "a slow success is never marked degraded", ("tests/test_degraded.py",)),
    Mutant("G2", "greenmon/store.py", "            series.slow += 1\n", "            series.good += 1\n",
           "a degraded check counts as good in the SLI: no result=\"slow\"", ("tests/test_degraded.py",)),
    Mutant("G3", "greenmon/settings.py", "return self.degraded_latency if degraded_latency is None else",
           "return self.degraded_latency if True else",
           "a target's own degraded_latency (0: off for it) is ignored", ("tests/test_degraded.py",)),
    # --- every address of a name ---
    Mutant("N1", "greenmon/check.py", "        if not step.all_addresses:\n            addresses = addresses[:1]\n",
           "        addresses = addresses[:1]\n", "addresses = \"all\" checks the first address only",
           ("tests/test_addresses.py",)),
    Mutant("N2", "greenmon/result.py", "        return failed[0] if failed else max(",
           "        return finals[0] if failed else max(", "a failing address that is not the first "
           "one is not seen: the check is up", ("tests/test_addresses.py",)),
    Mutant("N3", "greenmon/transport.py", '            pool_kwargs["server_hostname"] = host_params["host"]\n',
           "            pass\n", "HTTPS to an address is verified against the address, not the name",
           ("tests/test_addresses.py",)),
    Mutant("N4", "greenmon/transport.py", "found = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)",
           "found = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)", "ip_version does not filter what a name resolves to",
           ("tests/test_addresses.py",)),
    # --- nothing loaded while checks are timed ---
    Mutant("L1", "greenmon/transport.py", "            load_parser()   # what reads the certificates, before any of them is timed\n",
           "", "the certificate parser is imported by the first HTTPS check, on the loop, while "
           "the sweep's checks are timed", ("tests/test_first_check.py",)),
    # --- targets: what is refused at load, status matching, names ---
    Mutant("T1", "greenmon/targets.py", "problem = unsendable(url)", "problem = None",
           "a URL requests cannot send is accepted at load", TARGETS),
    Mutant("T2", "greenmon/targets.py", "return status in self.codes or status // 100 in self.classes",
           "return status in self.codes", 'status classes ("2xx") match nothing',
           TARGETS + ("tests/test_check.py",)),
    Mutant("T3", "greenmon/targets.py", "    if port == 0:\n", "    if False:\n",
           "port 0 is accepted", TARGETS),
    Mutant("T4", "greenmon/targets.py", ' and name not in RESERVED_LABELS', "",
           "labels may be called target, le or instance", TARGETS),
    Mutant("T5", "greenmon/urls.py", "netloc = f\"{parts.username}:***@{parts.netloc.rpartition('@')[2]}\"",
           "netloc = parts.netloc", "a URL's password is shown and exported", TARGETS + EXPORTER),
    Mutant("T6", "greenmon/targets.py", "if not 100 <= item <= 599:", "if not 100 <= item:",
           "expect_status accepts 600 and above", TARGETS),
    Mutant("T7", "greenmon/targets.py", 'if any(c in url for c in " \\r\\n\\t\\0"):',
           'if any(c in url for c in "\\0"):', "a URL with spaces or CR/LF is accepted", TARGETS),
    Mutant("T8", "greenmon/targets.py", 'hashlib.sha256(self.name.encode()).digest()[:8]',
           'hashlib.sha256(self.name.encode()).digest()[:4]',
           "shards change with the version (replicas of two versions split targets differently)",
           TARGETS + ("tests/test_workers.py",)),
    Mutant("T9", "greenmon/targets.py",
           "f\"{values['method']} {redact_url(values.get('shown_url') or values['url'])}\"",
           "f\"{values['method']} {values['url']}\"",
           "an unnamed target's default name (a label) holds the URL's password or ${VAR} value", TARGETS),
    Mutant("T10", "greenmon/targets.py", 'if parts.scheme not in ("http", "https"):',
           'if parts.scheme not in ("http", "https", "ftp"):', "ftp:// URLs are accepted", TARGETS),
    Mutant("T11", "greenmon/targets.py", "LABEL_NAME.fullmatch(name) is not None",
           're.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", name) is not None',
           "`$` is back: a label name with a trailing newline (\"team\\n\") passes, and /metrics "
           "breaks for every target", TARGETS + ("tests/test_bad_input.py",)),
    Mutant("T12", "greenmon/urls.py", "        if not label.isascii():\n", "        if False:\n",
           "a host label urllib3 cannot encode (\"\\ufb01\") passes the config; every check of the "
           "target fails as connection/protocol", ("tests/test_targets.py",)),
    # --- auth: where secrets come from, and when they are read again ---
    Mutant("A1", "greenmon/auth.py", "self._value = os.environ.get(self.where, self._value)", "pass",
           "a token from the environment is never read again", AUTH),
    Mutant("A2", "greenmon/auth.py", "if stamp is not None and stamp == self._file_stamp:",
           "if self._file_stamp is not None:",
           "a token file rotated on disk is not picked up", AUTH),
    Mutant("A3", "greenmon/auth.py", 'return self.origin != "inline"', "return True",
           "an inline secret counts as refreshable", AUTH + ("tests/test_check.py",)),
    Mutant("A4", "greenmon/auth.py", "if len(given) != 1:", "if len(given) < 1:",
           "token and token_file both given: one is silently ignored", AUTH + ("tests/test_config.py",)),
    Mutant("A5", "greenmon/auth.py", "        header_value(secret.get())\n", "        secret.get()\n",
           "a secret with a newline (header injection) is accepted at load",
           AUTH + ("tests/test_config.py", "tests/test_fuzz_config.py")),
    Mutant("A6", "greenmon/auth.py", "            self._file_stamp = None\n            self._reload_file_if_changed()",
           "            self._reload_file_if_changed()",
           "after a 401, a token file is re-read only if its size or time changed", AUTH),
    # --- the store and the metric table: what Prometheus is told ---
    Mutant("X1", "greenmon/store.py", "        if result.skipped:   # not contacted",
           "        if False:   # not contacted", "a skipped check (open breaker) counts as a check", EXPORTER),
    Mutant("X2", "greenmon/store.py", "series.retries[_CLASS_INDEX[error_class]] += 1", "pass",
           "retries are not counted", EXPORTER),
    Mutant("X3", "greenmon/store.py", "for latency in result.attempt_latencies:",
           "for latency in result.attempt_latencies[-1:]:",
           "only the last attempt of a check is timed", EXPORTER),
    Mutant("X4", "greenmon/metrics.py", '("greenmon_up", by_target, 1 if last.ok else 0)',
           '("greenmon_up", by_target, 1)', "greenmon_up is always 1", EXPORTER),
    Mutant("X5", "greenmon/metrics.py",
           'return [] if last is None else [("greenmon_up", by_target, 1 if last.ok else 0)]',
           'return [("greenmon_up", by_target, 1 if last is not None and last.ok else 0)]',
           "greenmon_up 0 before the first check (a false down at every start)", EXPORTER),
    Mutant("X6", "greenmon/store.py", "            series.breaker = state.state\n", "            pass\n",
           "a half-open trial does not show while it runs", EXPORTER + BREAKER),
    Mutant("X7", "greenmon/store.py", "series.errors[_CLASS_INDEX[result.error_class]] += 1",
           "series.errors[0] += 1", "every failure counted as a timeout", EXPORTER),
    Mutant("X8", "greenmon/metrics.py", "info.update(target=target.name, url=target.display_url,",
           "info.update(target=target.name, url=target.url,",
           "greenmon_target_info exports the URL's password", EXPORTER + ("tests/test_secrets.py",)),
    Mutant("X9", "greenmon/store.py", "            series = old.get(target.name)\n",
           "            series = None\n", "a reload resets every target's counters",
           EXPORTER + ("tests/test_daemon.py",)),
    Mutant("X10", "greenmon/metrics.py", 'return "+Inf" if bound == float("inf")',
           'return "Inf" if bound == float("inf")', "the +Inf bucket is written as Inf", EXPORTER),
    Mutant("X12", "greenmon/metrics.py", '("target", "phase"), _phases, CHECKED, shown=_phase_gauges),',
           '("target", "phase"), _phases, CHECKED),', "phase_gauges = false is ignored",
           ("tests/test_metrics.py",)),
    Mutant("X13", "greenmon/metrics.py", "(row.samples(store, series, by_target) if row.shown(store) else [])",
           "row.samples(store, series, by_target)", "a row the store does not show still counts in the "
           "cached exposition's length: /metrics sends a wrong Content-Length", ("tests/test_metrics.py",)),
    Mutant("X11", "greenmon/metrics.py", '("target", "class"), _retries, RETRIED),',
           '("target", "class"), _retries),',
           "a retry does not mark greenmon_check_retries_total changed: /metrics shows a stale "
           "count until the target's layout changes", EXPORTER),
    # --- workers render their shares of /metrics; the parent joins them ---
    Mutant("W1", "greenmon/gzipjoin.py", "return _multiply(_x_to_8n(size2), crc1) ^ crc2", "return crc1 ^ crc2",
           "the joined gzip stream's CRC-32 is wrong: every client refuses the scrape",
           ("tests/test_gzipjoin.py", "tests/test_shared_exposition.py")),
    Mutant("W2", "greenmon/store.py", "labels = {name for name in label_names if is_target_label(name)}",
           "pass", "a worker's greenmon_target_info carries only its share's label names: the joined "
           "series differ from one process's", ("tests/test_shared_exposition.py",)),
    Mutant("W3", "greenmon/exposition.py", "if kept is not None and kept[0] == version:",
           "if kept is not None:", "a family's compressed part is kept after its lines changed: "
           "/metrics serves stale counts", ("tests/test_shared_exposition.py",)),
    Mutant("W4", "greenmon/workerprocess.py", "        store.series = dict(setup.seed)\n", "",
           "a replaced worker's counters restart from zero",
           ("tests/test_workers.py::test_daemon_replaces_a_worker_that_died",)),
    Mutant("W5", "greenmon/transport.py",
           '            self.adapter.proxy_manager_for(prepend_scheme_if_needed(proxy, "http"))\n',
           "            pass\n", "a proxy's pool manager is made by the first check through it, while "
           "others are timed", ("tests/test_first_check.py",)),
    Mutant("W6", "greenmon/cooperative.py", "yield_to_loop(IDLE_WAIT_S if now < self._aged else AGED_WAIT_S)",
           "yield_to_loop(IDLE_WAIT_S)", "a job on a saturated loop never ages: a worker's share of "
           "/metrics takes minutes", ("tests/test_cooperative.py",)),
    Mutant("W7", "greenmon/workers/child.py",
           "                if self._rendering is None or self._rendering.dead:   # else it is answered next\n",
           "                if True:\n", "a worker renders once per Render asked: on a saturated loop "
           "the renders pile up", ("tests/test_workers.py::test_renders_asked_while_one_runs_are_answered_by_one_more_not_one_each",)),
    Mutant("W8", "greenmon/workers/parent.py",
           "                    share = _late_share(worker, wait_s)\n",
           "                    raise ShareUnavailable('late')\n", "a worker's late share fails the scrape "
           "though its last share is recent", ("tests/test_workers.py::test_a_late_worker_is_served_by_its_last_share_and_one_without_any_fails_the_scrape",)),
    Mutant("W9", "greenmon/resolver.py", "        literal = _literal(host)\n", "        literal = None\n",
           "a connection to an IP address asks c-ares (it answers the same, slower)",
           ("tests/test_resolver.py::test_an_ip_address_is_its_own_answer_the_resolver_would_give",)),
    Mutant("W10", "greenmon/exposition.py",
           "    if label != MARK and any(piece is not None and MARK in piece for piece in fresh):\n",
           "    if False:\n",
           "a NUL that comes in a later result is written out as the target's label",
           ("tests/test_exposition_hostile.py::test_lines_that_hold_the_mark_themselves_are_kept_whole",)),
    Mutant("W11", "greenmon/exposition.py",
           "                yield b\"\".join([text[ends[index]:ends[end]].replace(MARK, label)\n",
           "                yield b\"\".join([text[ends[index]:ends[end]]\n",
           "a worker's share of /metrics is written without each target's label",
           ("tests/test_exposition_hostile.py::test_the_fixed_corpus_exports_text_that_parses",)),
    # --- oauth2 and discovery: tokens, and what sources yield ---
    Mutant("O1", "greenmon/tokens.py", "min(MAX_MARGIN_S, expires_in * MARGIN_FRACTION)", "MAX_MARGIN_S",
           "a one-minute margin on a 10 s token: a token request for every check", OAUTH2),
    Mutant("O2", "greenmon/tokens.py", "        if pending is not None:", "        if False:",
           "every waiting check sends its own token request", OAUTH2),
    Mutant("O3", "greenmon/tokens.py",
           "        if token is not None and (sent is None or sent[1] == token[0]):",
           "        if token is not None:",
           "each 401 of a replaced token drops the new one (a token request per refused check)", OAUTH2),
    Mutant("O4", "greenmon/check.py", "                and attempt.status_code is not None\n", "",
           "a token that could not be had is asked for again at once", OAUTH2),
    Mutant("D1", "greenmon/discovery/openapi.py",
           "            parameters[(parameter[\"name\"], parameter[\"in\"])] = parameter   # the operation's wins",
           "            parameters.setdefault((parameter[\"name\"], parameter[\"in\"]), parameter)",
           "a path-level parameter wins over the operation's own", DISCOVERY),
    Mutant("D2", "greenmon/discovery/file_sd.py", 'return "http://" + entry + ("" if "/" in entry else "/")',
           'return "https://" + entry + ("" if "/" in entry else "/")',
           "a bare host:port is checked over HTTPS", DISCOVERY),
    Mutant("D3", "greenmon/targets.py", "        if name in seen:\n", "        if False:\n",
           "two targets (or two sources) that name one target: one silently replaces the other",
           DISCOVERY + ("tests/test_config.py",)),
    Mutant("D4", "greenmon/discovery/live.py", "        state.stamp = stamp\n", "",
           "a broken file_sd file is counted as a new failure every second", ("tests/test_discovery_live.py",)),
]


@dataclass
class Outcome:
    mutant: Mutant
    status: str                  # killed | survived | timeout | stale
    seconds: float = 0.0
    by: str = ""                 # the first failing test
    output: list[str] = field(default_factory=list)


def fingerprint(folder: Path) -> str:
    """A digest of every .py file under ``folder``: the checkout's greenmon/ must not change."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def make_copy() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="greenmon-mutants-"))
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, workdir / name)
    return workdir


def environment(workdir: Path) -> dict:
    env = dict(os.environ)
    # The copy comes first on the import path of pytest and of every `python -m greenmon` a
    # test starts (an editable install's finder comes after PYTHONPATH). No .pyc files: a
    # mutant and its restored original may share a size and a modification second.
    env["PYTHONPATH"] = str(workdir) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def imports_the_copy(workdir: Path) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import greenmon; print(greenmon.__file__)"],
                           cwd=workdir / "tests", env=environment(workdir), capture_output=True,
                           text=True, timeout=60)
    return probe.stdout.strip().startswith(str(workdir))


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)")


def run_tests(workdir: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, str, list[str], float]:
    """(passed | failed | timeout, first failing test, last lines of output, seconds)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *tests],
        cwd=workdir, env=environment(workdir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        return "timeout", "", [], time.monotonic() - started
    except BaseException:
        _kill(process)
        raise
    lines = out.splitlines()
    failed = next((m[1] for line in lines if (m := _FAILED.match(line))), "")
    status = "passed" if process.returncode == 0 else "failed"
    return status, failed, lines[-15:], time.monotonic() - started


def _kill(process: subprocess.Popen) -> None:
    """The pytest run and everything it started (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def try_mutant(workdir: Path, mutant: Mutant, tests: tuple[str, ...] | None, timeout: float) -> Outcome:
    path = workdir / mutant.module
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return Outcome(mutant, "stale", by=f"original text found {original.count(mutant.old)} times")
    mutated = original.replace(mutant.old, mutant.new)
    compile(mutated, str(path), "exec")   # a mutant that is not Python is a mistake in this list
    path.write_text(mutated, encoding="utf-8")
    try:
        status, failed, output, seconds = run_tests(workdir, tests or mutant.tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    verdict = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[status]
    return Outcome(mutant, verdict, seconds, failed, output)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--tests", nargs="+", metavar="PATH",
                        help="run these test files for every mutant (default: each mutant's own)")
    parser.add_argument("--timeout", type=float, default=PER_RUN_TIMEOUT_S,
                        help="seconds per mutant run; a run that takes longer counts as killed (a hang)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the unmutated copy")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or m.id in args.only]
    if args.only and len(mutants) != len(set(args.only)):
        parser.error(f"unknown mutant id in {args.only}")
    if args.list:
        for m in mutants:
            count = (ROOT / m.module).read_text(encoding="utf-8").count(m.old)
            state = "ok" if count == 1 else f"STALE ({count} matches)"
            print(f"{m.id:4} {m.module:22} {state:6} {m.what}")
        return 0

    before = fingerprint(ROOT / "greenmon")
    signal.signal(signal.SIGTERM, _interrupt)   # as Ctrl-C: stop the run, remove the copy
    workdir = make_copy()
    outcomes: list[Outcome] = []
    interrupted = False
    try:
        if not imports_the_copy(workdir):
            print("mutations: the copy is not what `import greenmon` finds; aborting", file=sys.stderr)
            return 2
        if not args.no_baseline:
            files = tuple(sorted({t for m in mutants for t in (args.tests or m.tests)}))
            print(f"baseline: {' '.join(files)}", flush=True)
            status, failed, output, seconds = run_tests(workdir, files, args.timeout * 2)
            if status != "passed":
                print(f"the unmutated copy fails ({status}, {failed}) in {seconds:.0f}s:\n"
                      + "\n".join(output), file=sys.stderr)
                return 2
            print(f"baseline passed in {seconds:.0f}s", flush=True)
        for mutant in mutants:
            outcome = try_mutant(workdir, mutant, tuple(args.tests) if args.tests else None, args.timeout)
            outcomes.append(outcome)
            print(f"{mutant.id:4} {outcome.status:8} {outcome.seconds:6.0f}s  {mutant.what}"
                  + (f"  [{outcome.by}]" if outcome.by else ""), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if fingerprint(ROOT / "greenmon") != before:   # never expected: only the copy is written
            print("mutations: greenmon/ in the checkout changed during the run!", file=sys.stderr)
            return 3

    survived = [o for o in outcomes if o.status in ("survived", "stale")]
    killed = sum(o.status in ("killed", "timeout") for o in outcomes)
    print(f"\n{killed} killed, {len(survived)} survived or stale, of {len(outcomes)} run")
    for outcome in survived:
        print(f"  {outcome.mutant.id} {outcome.status}: {outcome.mutant.what} ({outcome.mutant.module})"
              + (f" - {outcome.mutant.note}" if outcome.mutant.note else ""))
    return 130 if interrupted else 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
