"""The HTML report of a bundle, drawn from its manifest: data quality, leaderboard, curves, slices, footprint.

The public interface is :func:`render_report` (:mod:`~tandem.report.html`); the inline SVG charts it draws
(:mod:`~tandem.report.charts`) are internal.
"""

from tandem.report.html import render_report

__all__ = ["render_report"]
