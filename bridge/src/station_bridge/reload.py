"""SIGHUP: whether the configuration file, read again, may replace the running one.

The file is validated as check-config validates it (and its directories created); invalid, or
one that would strand points this bridge holds: `refused`, the running configuration kept;
unchanged: nothing to do; changed: `applied`, and the caller stops gracefully, then cli
re-executes the same command line (a new process wires the new configuration, wiring.py).
"""

from __future__ import annotations

import logging
import os

from .config import Config, ConfigError, load
from .metrics import Metrics
from .sinks import InfluxSink

log = logging.getLogger("station_bridge")


def reload(config: Config, sinks: list[InfluxSink], metrics: Metrics) -> str:
    """The result, counted in `bridge_reloads_total`: refused, unchanged or applied."""
    try:
        new = load(config.source)
        for directory in (new.journal_dir, new.dead_letter_dir):
            directory.mkdir(parents=True, exist_ok=True)
        error = ""
    except ConfigError as exc:
        error = str(exc)
    except OSError as exc:
        error = f"{exc.filename}: {exc.strerror}"
    except Exception as exc:  # a defect in validation must not stop the running bridge: refused, logged
        log.exception("reload: unexpected error validating the configuration")
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        error = destructive(config, new, sinks)
    if error:
        result = "refused"
        log.error("reload refused: the configuration is invalid, the running one is kept",
                  extra={"config": config.source, "error": error[:1000]})
    elif new.raw == config.raw:
        result = "unchanged"
        log.info("reload: the configuration is unchanged, nothing to do", extra={"config": config.source})
    else:
        result = "applied"
        log.warning("reload: the configuration changed: draining and flushing, then re-executing",
                    extra={"config": config.source, "pid": os.getpid()})
    metrics.inc("bridge_reloads_total", 1, result=result)
    return result


def destructive(config: Config, new: Config, sinks: list[InfluxSink]) -> str:
    """Why a new configuration would strand points this bridge holds ("" when it would not):
    a destination with pending points renamed or removed, or journal.dir moved while any
    destination has pending points. A restart with it is the operator's explicit choice."""
    if new.journal_dir != config.journal_dir:
        held = {s.name: s.pending for s in sinks if s.pending}
        if held:
            return (f"journal.dir changes from {config.journal_dir} to {new.journal_dir} while points are "
                    f"pending {held}: they would stay behind; let them deliver first, or restart to apply it")
    kept = {d.name for d in new.destinations}
    held = {s.name: s.pending for s in sinks if s.pending and s.name not in kept}
    if held:
        return (f"destinations {sorted(held)} would go while points are pending for them {held}: let them "
                f"deliver first, or restart to apply it (their journals are then reported as orphaned)")
    return ""
