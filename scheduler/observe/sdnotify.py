"""The systemd notify protocol (``sd_notify(3)``), without a dependency on libsystemd.

With ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` to a unix datagram socket; the service
sends newline-separated ``KEY=VALUE`` assignments to it: ``READY=1`` once started,
``STOPPING=1`` when shutting down, ``WATCHDOG=1`` as a keep-alive, ``STATUS=...`` as the
line ``systemctl status`` shows. Outside systemd (tests, a terminal, cron) every call is a
no-op, so the daemon calls these helpers unconditionally.

A failure to notify is logged and swallowed: a lost status line must never stop a tick.
(A lost ``WATCHDOG=1`` is not swallowed by systemd, which restarts the service once
``WatchdogSec`` passes without one; that is the point of the watchdog.)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

log = structlog.get_logger()


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        # Linux abstract namespace: systemd writes the leading NUL byte as '@'.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd >= 256 may also pass vsock:CID:PORT (for VMs); the daemon never runs there.
    return None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STATUS=...\\nWATCHDOG=1"``) to systemd.

    Returns True when the datagram was sent; False when not run under a notify socket or
    when sending failed (logged as a warning).
    """
    env = os.environ if env is None else env
    target = env.get(NOTIFY_SOCKET_ENV, "")
    if not target:
        return False
    address = _socket_address(target)
    if address is None:
        log.warning("sd_notify_unsupported_socket", socket=target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify_failed", socket=target, error=str(exc))
        return False
    return True


def ready(status_text: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Startup is complete: systemd considers the unit started (``systemctl start`` returns)."""
    state = "READY=1"
    if status_text is not None:
        state += "\n" + _status_line(status_text)
    return notify(state, env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """Shutdown has begun (sent on SIGTERM, before the last tick's work is wound down)."""
    return notify("STOPPING=1", env)


def reloading(env: Mapping[str, str] | None = None) -> bool:
    """A configuration reload (SIGHUP) has begun; send :func:`ready` when it is done."""
    return notify("RELOADING=1", env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Keep-alive: the main loop is alive. Must arrive at least every ``WatchdogSec``."""
    return notify("WATCHDOG=1", env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """The one-line status shown by ``systemctl status``."""
    return notify(_status_line(text), env)


def _status_line(text: str) -> str:
    # A newline would start a new assignment: the rest of the text could set READY=1.
    return "STATUS=" + " ".join(text.split())


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when the watchdog is off for this process.

    From ``$WATCHDOG_USEC``; None when it is unset, not a positive integer, or when
    ``$WATCHDOG_PID`` names another process (the variables were inherited by a child).
    Ping at half this interval (sd_watchdog_enabled(3) recommends it).
    """
    env = os.environ if env is None else env
    usec_text = env.get(WATCHDOG_USEC_ENV, "")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid_text = env.get(WATCHDOG_PID_ENV, "")
    if pid_text:
        try:
            pid = int(pid_text)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    return usec / 1_000_000
