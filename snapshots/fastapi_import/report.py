"""What an import phase reports: counts per table, conflicts by object, and the summary text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``: one phase's progress (the command draws a bar)."""

PHASES = ("catalog", "snapshots", "keys")


@dataclass
class TableCount:
    """One table of one phase: rows read from the source and what became of them."""

    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    differing: int = 0  # exist in both and differ; left alone without --update

    @property
    def written(self) -> int:
        return self.created + self.updated

    @property
    def skipped(self) -> int:
        return self.unchanged + self.differing


@dataclass
class PhaseReport:
    """One phase: its tables, the conflicts that stopped it (then nothing of it is written)."""

    name: str
    tables: dict[str, TableCount] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    differing_ids: set[object] = field(default_factory=set)  # left alone: verify skips them

    def table(self, name: str) -> TableCount:
        return self.tables.setdefault(name, TableCount())

    @property
    def written(self) -> int:
        return 0 if self.conflicts else sum(t.written for t in self.tables.values())

    def detail(self) -> dict[str, dict[str, int]]:
        """The counts as the audit event's ``detail`` holds them."""
        return {
            name: {
                "read": t.read,
                "created": t.created,
                "updated": t.updated,
                "unchanged": t.unchanged,
                "differing": t.differing,
            }
            for name, t in self.tables.items()
        }


class PhaseConflict(Exception):
    """Raised inside a phase's transaction so that nothing of the phase is written."""


def summary_lines(reports: list[PhaseReport]) -> list[str]:
    """The summary table: per phase and table, read / written / skipped."""
    head = f"{'phase':<10} {'table':<16} {'read':>9} {'created':>9} {'updated':>9} {'skipped':>9}"
    lines = [head, "-" * len(head)]
    for report in reports:
        for name, t in report.tables.items():
            lines.append(
                f"{report.name:<10} {name:<16} {t.read:>9} {t.created:>9} {t.updated:>9} "
                f"{t.skipped:>9}"
            )
    lines.append("seconds: " + ", ".join(f"{r.name} {r.seconds:.1f}" for r in reports))
    differing = [
        f"{t.differing} {name}" for r in reports for name, t in r.tables.items() if t.differing
    ]
    if differing:
        lines.append(
            "skipped because they differ from the source (--update refreshes them): "
            + ", ".join(differing)
        )
    return lines
