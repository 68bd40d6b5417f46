"""structlog, configured once by the entry point, for our loggers and every library's.

JSON lines when stdout is not a terminal (systemd, cron, pipes), readable console output
when it is. Everything of ours logs through ``structlog.get_logger()``; the standard
``logging`` records of libraries (APScheduler's "maximum number of running instances
reached", alembic's migration lines, httpx, botocore...) and Python warnings go through the
same renderer, so under systemd every line is one JSON object (#10 item 15). Tests use
``structlog.testing.capture_logs``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

import structlog

#: The handler this module puts on the root logger (replaced on each configure call).
#: Routine INFO lines of libraries, dropped unless the level is debug: alembic's two context
#: lines on every command (capsched's own db.upgrade line names the revisions; alembic's
#: "Running upgrade" lines stay) and APScheduler's "Running job" / "executed successfully"
#: pair on every tick (the tick line says more); pgserver's narration of the embedded server
#: starting and stopping on every command. Warnings and errors always pass.
_ROUTINE_LINES = {
    "alembic.runtime.migration": ("Context impl", "Will assume"),
    "apscheduler.executors.default": ("Running job", "Job "),
    # The embedded server's start/stop narration (about ten lines per command).
    "pgserver": ("",),
}


class _DropRoutine(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(self.prefixes)


_HANDLER_NAME = "capsched-structlog"


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Commands whose stdout is data log to stderr; the daemon passes ``sys.stdout``."""
    stream = sys.stderr if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric_level = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(stream, renderer, numeric_level)


def _route_standard_logging(
    stream: TextIO, renderer: structlog.typing.Processor, level: int
) -> None:
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    # Replace the handler of an earlier call (SIGHUP reload, tests), keep any other (pytest's).
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Routine library lines (see _ROUTINE_LINES): noise in cron mail and the journal.
    for name, prefixes in _ROUTINE_LINES.items():
        library = logging.getLogger(name)
        for old_filter in [f for f in library.filters if isinstance(f, _DropRoutine)]:
            library.removeFilter(old_filter)
        if level > logging.DEBUG:
            library.addFilter(_DropRoutine(prefixes))
    logging.captureWarnings(True)
    # pgserver asks platformdirs for a runtime directory (a lock file shared by the capsched
    # processes using one embedded server); without XDG_RUNTIME_DIR (cron, system services)
    # platformdirs warns on every embedded command and falls back to /tmp/runtime-$UID,
    # which is the right place for that lock. Nothing to act on, so no line.
    warnings.filterwarnings("ignore", message=r"XDG_RUNTIME_DIR is not set")
