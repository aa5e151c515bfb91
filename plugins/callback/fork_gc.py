# Copyright: station-stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Less controller CPU per task: ansible-playbook forks a worker per task and host, and a worker's
garbage collections walk every object it inherited, writing to each one's page (copy on write).
Freezing the controller's objects right before the workers fork keeps them out of those walks
(Python's gc documentation recommends exactly this before fork()). Measured on an idempotent
station converge: see docs/performance.md."""

from __future__ import annotations

DOCUMENTATION = """
name: fork_gc
type: aggregate
short_description: keeps forked workers' garbage collections off the controller's objects
description:
  - At every task start, before the strategy forks its workers, moves the controller's objects to
    Python's permanent GC generation (C(gc.freeze)), so a worker's collections neither walk nor
    copy them; every O(refreeze_every) tasks, collects the frozen objects once so cyclic garbage of
    a long run is still reclaimed.
  - Changes no task, result or output; enable it in C(callbacks_enabled).
author: station-stack contributors (@station-stack)
options:
  refreeze_every:
    description: Task starts between two full collections of the frozen objects.
    type: int
    default: 100
    env:
      - name: STATION_FORK_GC_REFREEZE_EVERY
requirements: [enable in configuration]
"""

import gc  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "station_stack.station.fork_gc"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._starts = 0

    def _before_fork(self) -> None:
        self._starts += 1
        if self._starts % max(1, int(self.get_option("refreeze_every"))) == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._before_fork()

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self._before_fork()

    def v2_playbook_on_stats(self, stats) -> None:
        gc.unfreeze()
