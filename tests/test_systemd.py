"""The systemd unit (deploy/systemd/greenmon.service; README, "Dashboard and service").

Its content is read as systemd reads it (sections, repeated keys, continued lines) and held
to what the operations kit promises: hardened, the state file under StateDirectory, SIGHUP
on reload, open files for 10,000 targets, and an ExecStart that greenmon's own command line
accepts. systemd-analyze then checks it as systemd would: ``verify`` (a copy whose ExecStart
is the greenmon installed here, since verify needs the binary to exist) and ``security``
(its exposure score). Nothing is started. Without systemd-analyze those two skip, saying
how to install it, or fail when GREENMON_REQUIRE_SYSTEMD=1 (CI).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greenmon.cli import EXIT_USAGE, build_parser
from greenmon.settings import MonitorSettings
from greenmon.limits import sockets_needed

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "greenmon.service"
REQUIRE_ENV = "GREENMON_REQUIRE_SYSTEMD"
SKIP_REASON = "systemd-analyze not found; install it with: apt-get install systemd"
TARGETS = 10_000   # what the unit's LimitNOFILE is sized for


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value) in order (keys may repeat).
    Comments (# and ;) and blank lines are skipped; a trailing backslash continues a line."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    logical = []
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical.append(line[:-1].strip())
            continue
        line = " ".join(logical + [line]).strip()
        logical = []
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def test_parse_unit_reads_sections_repeats_and_continued_lines():
    sections = parse_unit("# c\n[Unit]\nDescription=x\n\n[Service]\n; c\nA=1\nA=2\n"
                          "ExecStart=/bin/a \\\n  --b c\n")
    assert sections == {"Unit": [("Description", "x")],
                        "Service": [("A", "1"), ("A", "2"), ("ExecStart", "/bin/a --b c")]}


@pytest.fixture(scope="module")
def service() -> dict[str, str]:
    """The [Service] keys; a key that repeats is joined with spaces (as list-valued keys add up)."""
    out: dict[str, str] = {}
    for key, value in parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]:
        out[key] = f"{out[key]} {value}".strip() if key in out else value
    return out


def exec_start_args(service: dict[str, str]):
    argv = shlex.split(service["ExecStart"])
    return argv, build_parser().parse_args(argv[1:])


# --- What the unit promises ---------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),        # the whole file system read-only but the state directory
    ("DynamicUser", "yes"),             # never root: a user made up for the service
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("CapabilityBoundingSet", ""),      # no capability at all: port 9715 needs none
    ("AmbientCapabilities", ""),
    ("UMask", "0077"),
])
def test_the_unit_is_hardened(service, key, value):
    assert service.get(key) == value, f"{key}={service.get(key)!r}"


def test_the_network_stays_open_for_a_prober(service):
    """greenmon must reach whatever its targets name: no private network, no IP filter, and
    the Internet families allowed."""
    assert service.get("PrivateNetwork", "no") == "no"
    assert "IPAddressDeny" not in service and "IPAddressAllow" not in service
    families = service["RestrictAddressFamilies"].split()
    assert {"AF_INET", "AF_INET6"} <= set(families) and not families[0].startswith("~"), families


def test_the_system_call_filter_fails_calls_instead_of_killing(service):
    assert "@system-service" in service["SystemCallFilter"]
    assert service["SystemCallErrorNumber"] == "EPERM"


def test_reload_sends_sighup(service):
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_the_state_file_is_under_the_state_directory(service):
    """--state-file in ExecStart names a file in /var/lib/<StateDirectory>, the one
    directory ProtectSystem=strict leaves writable (and keeps across restarts)."""
    argv, args = exec_start_args(service)
    state_directory = service["StateDirectory"]
    assert re.fullmatch(r"[a-z][a-z0-9-]*", state_directory), state_directory
    assert args.state_file and os.path.isabs(args.state_file), argv
    assert os.path.dirname(args.state_file) == f"/var/lib/{state_directory}", argv
    assert "ReadWritePaths" not in service   # nothing else is writable


def test_exec_start_runs_the_daemon_with_the_config_from_its_configuration_directory(service):
    argv, args = exec_start_args(service)   # greenmon's own parser accepts every flag
    assert os.path.basename(argv[0]) == "greenmon" and os.path.isabs(argv[0]), argv
    assert not args.once and not args.check_config and not args.demo, argv
    assert os.path.dirname(args.config) == f"/etc/{service['ConfigurationDirectory']}", argv


def test_open_files_are_sized_for_10000_targets(service):
    """The most sockets greenmon needs for 10,000 targets, at any concurrency (limits.py: at
    most one per target, plus its own reserve), fit under LimitNOFILE."""
    need = max(sockets_needed(concurrency, TARGETS) for concurrency in (1000, TARGETS, 10 * TARGETS))
    limit = int(service["LimitNOFILE"])
    assert need <= limit, (need, limit)
    assert limit <= 8 * need   # sized, not "as much as possible"


def test_stopping_and_restarting(service):
    """SIGTERM stops gracefully within TimeoutStopSec (above the default deadline of a check);
    a config error (exit 2) is not restarted over and over."""
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > MonitorSettings().timeout
    assert service["Restart"] == "on-failure"
    assert str(EXIT_USAGE) in service["RestartPreventExitStatus"].split()


# --- systemd-analyze ----------------------------------------------------------------------------

def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"systemd-analyze not found ({REQUIRE_ENV}=1; {SKIP_REASON})", pytrace=False)
    pytest.skip(SKIP_REASON)


def unit_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit in ``tmp_path``, its ExecStart running the greenmon installed here (verify
    checks that the command exists), with ``extra`` lines added to [Service]."""
    greenmon = shutil.which("greenmon")
    command = [greenmon] if greenmon else [sys.executable, "-m", "greenmon"]
    text = UNIT.read_text(encoding="utf-8")
    text, replaced = re.subn(r"^ExecStart=\S+", lambda _: "ExecStart=" + shlex.join(command), text,
                             flags=re.MULTILINE)
    assert replaced == 1
    text = text.replace("[Service]\n", f"[Service]\n{extra}", 1)
    path = tmp_path / UNIT.name
    path.write_text(text, encoding="utf-8")
    return path


def run(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in argv], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def complaints(result: subprocess.CompletedProcess) -> list[str]:
    """What systemd-analyze said about the unit (its lines name the unit file)."""
    return [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]


def test_systemd_analyze_verify_passes_without_a_complaint(tmp_path):
    tool = systemd_analyze()
    result = run([tool, "verify", unit_copy(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0 and complaints(result) == [], result


def test_systemd_analyze_verify_would_see_a_mistake(tmp_path):
    """The check above can fail: a misspelt key and a bad value are reported (verify exits 0
    for those, so the test reads its output)."""
    tool = systemd_analyze()
    result = run([tool, "verify", unit_copy(tmp_path, "ProtectSytem=strict\nNoNewPrivileges=maybe\n")],
                 cwd=tmp_path)
    said = "\n".join(complaints(result))
    assert "Unknown key 'ProtectSytem'" in said and "ignoring: maybe" in said, result


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    """systemd's own exposure score (0 safest, 10 unsafe) stays low: under 2 ("OK")."""
    tool = systemd_analyze()
    result = run([tool, "security", "--offline=true", unit_copy(tmp_path)], cwd=tmp_path)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline (systemd < 250): {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result
    assert float(match[1]) < 2.0, result.stdout
