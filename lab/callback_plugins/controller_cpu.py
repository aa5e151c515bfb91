"""Controller CPU per task: `ANSIBLE_CALLBACKS_ENABLED=controller_cpu` with
`ANSIBLE_CALLBACK_PLUGINS=lab/callback_plugins` (lab/bench.py sets both).

CPU seconds (user + system) of ansible-playbook itself plus its reaped children (the forked
workers and their ssh/docker clients), read at every task start; the difference is charged to
the task that ran before. At the end: the total, the CPU per task by status, and the tasks,
by role, that cost most. Written for the benchmark's breakdown, not for production runs."""

from __future__ import annotations

import json
import os
import resource
from collections import defaultdict

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: controller_cpu
type: aggregate
short_description: controller CPU seconds per task and role
description: Charges the controller's CPU (itself and its workers) to the task that ran; prints a summary.
requirements: [enable in configuration]
"""


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "controller_cpu"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.started = _cpu()
        self.mark = self.started
        self.current: str | None = None
        self.status: dict[str, str] = {}
        self.cost: dict[str, float] = defaultdict(float)
        self.order: list[str] = []

    def _charge(self) -> None:
        now = _cpu()
        if self.current is not None:
            self.cost[self.current] += now - self.mark
        self.mark = now

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:  # noqa: ANN001
        self._charge()
        role = task._role.get_name() if task._role else "-"
        self.current = f"{role}: {task.get_name()}"
        if self.current not in self.status:
            self.order.append(self.current)
            self.status[self.current] = "skipped"

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _result(self, status: str) -> None:
        rank = ["skipped", "ok", "changed", "failed"]
        if self.current and rank.index(status) > rank.index(self.status.get(self.current, "skipped")):
            self.status[self.current] = status

    def v2_runner_on_ok(self, result) -> None:  # noqa: ANN001
        self._result("changed" if result._result.get("changed") else "ok")

    def v2_runner_item_on_ok(self, result) -> None:  # noqa: ANN001
        self._result("changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:  # noqa: ANN001
        self._result("failed")

    def v2_playbook_on_stats(self, stats) -> None:  # noqa: ANN001
        self._charge()
        self.current = None
        total = _cpu() - self.started
        by_status: dict[str, list[float]] = defaultdict(list)
        by_role: dict[str, float] = defaultdict(float)
        for name in self.order:
            by_status[self.status[name]].append(self.cost[name])
            by_role[name.split(": ", 1)[0]] += self.cost[name]
        own = resource.getrusage(resource.RUSAGE_SELF)
        summary = {
            "total_s": round(total, 2),
            "ansible_playbook_itself_s": round(own.ru_utime + own.ru_stime, 2),
            "in_tasks_s": round(sum(self.cost.values()), 2),
            "by_status": {k: {"tasks": len(v), "cpu_s": round(sum(v), 2)} for k, v in by_status.items()},
            "by_role": {k: round(v, 2) for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])},
            "top": [[name, self.status[name], round(self.cost[name], 3)]
                    for name in sorted(self.order, key=lambda n: -self.cost[n])],
        }
        target = os.environ.get("CONTROLLER_CPU_JSON")
        if target:
            with open(target, "w", encoding="utf-8") as out:
                json.dump(summary, out, indent=1)
        self._display.display(f"controller CPU: {summary['total_s']} s; by status {summary['by_status']}")
