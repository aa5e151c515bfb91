"""Fault injection for tests of what the bridge does when a part of it raises where nothing
should: on the child's PYTHONPATH (BridgeProcess.env), it patches `station_bridge.pipeline`
once the module is loaded, as `STATION_TEST_FAULT` says:

- `dead_letter_record`: making the dead-letter record of a message holding b"boom" raises
  MemoryError (what a big message's copy does when memory runs out);
- `receive_round:<subscription>`: every compiled receive of that subscription raises (a defect
  of the receive path that repeats);
- `receive_stall:<subscription>`: every compiled receive of that subscription first hangs for
  12 s (a receive blocked on a hung disk, say);
- `receive_exit:<subscription>`: the first compiled receive of that subscription raises
  SystemExit in its receive thread (what no `except Exception` contains: the thread ends).

Everything else runs as it is: real sockets, the real pipeline, the real InfluxDB.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

FAULT = os.environ.get("STATION_TEST_FAULT", "")


def _patch(pipeline: object) -> None:
    if FAULT == "dead_letter_record":
        real = pipeline.make_record  # type: ignore[attr-defined]

        def make_record(frames: list[bytes], *args: object, **keys: object) -> object:
            if any(b"boom" in frame for frame in frames):
                raise MemoryError("injected: no memory for the dead letter's copy")
            return real(frames, *args, **keys)
        pipeline.make_record = make_record  # type: ignore[attr-defined]
    elif FAULT.startswith("receive_round:"):
        name = FAULT.split(":", 1)[1]
        cls = pipeline.Pipeline  # type: ignore[attr-defined]
        real_receive = cls.receive_compiled

        def receive_compiled(self: object, sub: object, *args: object) -> int:
            if sub.name == name:  # type: ignore[attr-defined]
                raise RuntimeError("injected: the receive path fails")
            return real_receive(self, sub, *args)
        cls.receive_compiled = receive_compiled
    elif FAULT.startswith("receive_exit:"):
        import threading
        name = FAULT.split(":", 1)[1]
        cls = pipeline.Pipeline  # type: ignore[attr-defined]
        real_once = cls.receive_compiled
        done: list[bool] = []

        def once(self: object, sub: object, *args: object) -> int:
            if sub.name == name and not done and threading.current_thread().name.startswith("receive-"):  # type: ignore[attr-defined]
                done.append(True)
                raise SystemExit("injected: the receive thread ends")
            return real_once(self, sub, *args)
        cls.receive_compiled = once
    elif FAULT.startswith("receive_stall:"):
        import time
        name = FAULT.split(":", 1)[1]
        cls = pipeline.Pipeline  # type: ignore[attr-defined]
        real_stalled = cls.receive_compiled

        def stalled(self: object, sub: object, *args: object) -> int:
            if sub.name == name:  # type: ignore[attr-defined]
                time.sleep(12)
            return real_stalled(self, sub, *args)
        cls.receive_compiled = stalled


class _After(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of station_bridge.pipeline to patch it once run."""

    def find_spec(self, name: str, path: object, target: object = None) -> object:
        if name != "station_bridge.pipeline":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def patched(module: object) -> None:
            exec_module(module)
            _patch(module)
        spec.loader.exec_module = patched  # type: ignore[method-assign]
        return spec


if FAULT:
    sys.meta_path.insert(0, _After())
