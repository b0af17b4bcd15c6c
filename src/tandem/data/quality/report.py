"""The quality gate's findings and report, and the error it raises when asked to be strict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tandem.errors import DataError

SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    """One problem (or fact) found in the data."""

    check: str
    severity: str
    message: str
    column: str | None = None
    value: float | None = None  # the figure the severity was decided on (a fraction, a skill, a count)


@dataclass
class QualityReport:
    """Every finding of one run of the gate, most severe first."""

    rows: int
    columns: int
    target: str
    test_rows: int | None
    seconds: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity ``error``."""
        return [f for f in self.findings if f.severity == "error"]

    def counts(self) -> dict[str, int]:
        """Severity -> number of findings, for every severity."""
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def to_dict(self) -> dict:
        """The report as JSON-ready values (as the bundle's manifest stores it)."""
        return {"rows": self.rows, "columns": self.columns, "target": self.target, "test_rows": self.test_rows,
                "seconds": round(self.seconds, 3), "counts": self.counts(),
                "findings": [asdict(f) for f in self.findings]}

    def summary(self) -> str:
        """One line: the count of errors, warnings and notes."""
        c = self.counts()
        return f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s)"


class QualityError(DataError):
    """The gate found errors and was asked to be strict (exit status 1: the data, not the command, is wrong)."""

    exit_code = 1


def _count(k: int, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _pct(share: float) -> str:
    return "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"
