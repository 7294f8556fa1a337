"""The preview report: the DORA history an import would create, and what looks wrong in it.

    plan -> figures.compute (plain data) -> history_text (the preview's History and Warnings sections)
                                         -> write_report: FILE.json (the data as is) or FILE.html
                                            (one self-contained page, charts as inline SVG from matplotlib)

Every number is formatted by the same functions for the terminal and the page, from the same data,
so they show the same numbers. Text from the input (entity and environment names, file names,
values in examples) is made visible (control characters escaped) before it is printed or put in
the page, and HTML-escaped in the page.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from backfill import figures
from backfill.display import printable
from backfill.errors import UsageError
from backfill.plan import Plan

TERMINAL_GROUPS = 8  # groups listed in the terminal; the page has all of them
CHARTED_GROUPS = 12  # groups charted in the page (the largest), besides "all"
TERMINAL_EXAMPLES = 3
REPORT_SUFFIXES = (".html", ".htm", ".json")

def visible(text: object) -> str:
    """Text from the input made safe to show: every control or bidi character as an escape (the
    one rule of backfill.display, for the page as well as the terminal)."""
    return printable(text)


def number(value: float | int | None) -> str:
    """A figure as both the terminal and the page show it: at most 2 decimals, trailing zeros cut."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}".rstrip("0").rstrip(".")


def percent(rate: float | None) -> str:
    return "-" if rate is None else number(round(100 * rate, 2)) + "%"


def group_name(group: dict[str, Any]) -> str:
    if group["entity"] == figures.ALL:
        return "all"
    return f"{visible(group['entity'])} / {visible(group['env']) if group['env'] is not None else '(no env)'}"


def lead_text(group: dict[str, Any]) -> str | None:
    lead = group.get("lead_time")
    if not lead or not lead["deployments_with_commit_time"]:
        return None
    return (f"lead time median {number(lead['median_hours'])} h, p90 {number(lead['p90_hours'])} h "
            f"({lead['deployments_with_commit_time']} deployments)")


def group_line(group: dict[str, Any]) -> str:
    parts = [
        f"{group['deployments']} deployments {group['first'][:10]} .. {group['last'][:10]}",
        f"median {number(group['median_per_week'])} per week, {number(group['median_per_month'])} per month",
        f"DORA deployment frequency: {group['band']}",
        f"change failure rate {percent(group['change_failure_rate'])} ({group['failed']} failed)",
    ]
    lead = lead_text(group)
    return f"{group_name(group)}: " + "; ".join(parts + ([lead] if lead else []))


def example_text(example: dict[str, Any]) -> str:
    where = f"{visible(example['file'])} row {example['row']}: " if example.get("file") and example.get("row") else (
        f"{visible(example['file'])}: " if example.get("file") else "")
    return where + visible(example["detail"])


def history_text(data: dict[str, Any], *, report_path: str | None = None) -> str:
    """The preview's History and Warnings sections."""
    lines = ["History (what DevGrid will show; ISO weeks and months in UTC):"]
    if data["all"] is None:
        lines.append("  no events planned")
    else:
        groups = data["groups"]
        lines.append(f"  {group_line(data['all'])}")
        lines.extend(f"  {group_line(g)}" for g in groups[:TERMINAL_GROUPS])
        if len(groups) > TERMINAL_GROUPS:
            lines.append(f"  ... and {len(groups) - TERMINAL_GROUPS} more entity / environment pairs"
                         + (f" in {visible(report_path)}" if report_path else " (see --report FILE.html)"))
        lines.append("  computed from: every planned event is one deployment; medians over every week (month) from the "
                     "first deployment to the last, empty ones as 0; the DORA band from those medians; change failure "
                     "rate = failed / all (definitions in the --report file)")
        lines.append(f"  lead time: {visible(data['lead_time_source'])}")
    warnings = data["warnings"]
    lines.append(f"Warnings: {len(warnings)}" if warnings else "Warnings: none")
    for warning in warnings:
        lines.append(f"  {warning['title']}: {warning['count']} - {warning['advice']}")
        shown = warning["examples"][:TERMINAL_EXAMPLES]
        lines.extend(f"    {example_text(e)}" for e in shown)
        more = len(warning.get("listed", warning["examples"])) - len(shown)
        if more > 0:
            lines.append(f"    ... {more} more in the --report page")
    return "\n".join(lines)


# --- files -----------------------------------------------------------------------------------

def check_report_path(path: str) -> None:
    """--report takes FILE.html or FILE.json (checked before the plan is built)."""
    if Path(path).suffix.lower() not in REPORT_SUFFIXES:
        raise UsageError(f"--report {path}: give a file ending in .html or .json")


def write_report(data: dict[str, Any], path: str) -> None:
    """FILE.json: the data; FILE.html: the page. Written to a temporary file, then moved in place."""
    check_report_path(path)
    target = Path(path)
    if target.suffix.lower() == ".json":
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    else:
        text = html_page(data)
    temp = target.with_name(f".{target.name}.partial")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UsageError(f"--report {path}: cannot write: {exc.strerror}") from None


def build(plan: Plan, *, now: datetime | None = None) -> dict[str, Any]:
    return figures.compute(plan, now=now)


# --- the page --------------------------------------------------------------------------------

def _e(text: object) -> str:
    return html.escape(visible(text), quote=True)


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1f2328;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warning{border-left:4px solid #bf8700;background:#fff8c5;padding:6px 12px;margin:12px 0}
.note{color:#57606a;font-size:13px}.chart{margin:12px 0}.chart svg{max-width:100%;height:auto}
code{background:#f6f8fa;padding:0 3px}
"""


def html_page(data: dict[str, Any]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>backfill preview report</title>", f"<style>{_STYLE}</style></head><body>",
           "<h1>Preview report: the deployment history this import would create</h1>",
           f'<p class="note">Generated {_e(data["generated_at"])} by <code>backfill preview</code> from mapping '
           f'<code>{_e(data["mapping"])}</code> and {len(data["inputs"])} input file(s): '
           + ", ".join(f"<code>{_e(i['file'])}</code> ({i['rows']} rows)" for i in data["inputs"]) + ".</p>"]
    rows = data["rows"]
    out.append(f'<p>Rows: {rows["read"]} read = {rows["planned"]} planned + {rows["filtered"]} filtered + '
               f'{rows["duplicates"]} duplicates + {rows["invalid"]} invalid'
               + (f' + {rows["outside_range"]} outside --since/--until' if rows["outside_range"] else "")
               + (f' + {rows["empty"]} empty rows' if rows["empty"] else "") + ".</p>")
    out += _figures_table(data)
    out += _warnings_html(data["warnings"])
    out += _charts_html(data)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _figures_table(data: dict[str, Any]) -> list[str]:
    out = ["<h2>DORA figures</h2>"]
    if data["all"] is None:
        return out + ["<p>No events planned.</p>"]
    out.append("<table><tr><th>entity / environment</th><th>deployments</th><th>first</th><th>last</th>"
               "<th>median per week</th><th>median per month</th><th>deployment frequency (DORA)</th>"
               "<th>change failure rate</th><th>lead time median (p90), hours</th></tr>")
    for group in [data["all"], *data["groups"]]:
        lead = group.get("lead_time") or {}
        lead_cell = (f'{number(lead["median_hours"])} ({number(lead["p90_hours"])}), '
                     f'{lead["deployments_with_commit_time"]} deployments' if lead.get("deployments_with_commit_time")
                     else "-")
        out.append(
            f"<tr><td>{html.escape(group_name(group))}</td><td class=n>{group['deployments']}</td>"
            f"<td>{group['first'][:10]}</td><td>{group['last'][:10]}</td>"
            f"<td class=n>{number(group['median_per_week'])}</td><td class=n>{number(group['median_per_month'])}</td>"
            f"<td>{_e(group['band'])}</td><td class=n>{percent(group['change_failure_rate'])} "
            f"({group['failed']} failed)</td><td>{lead_cell}</td></tr>")
    out.append("</table>")
    out.append("<p><b>Computed from:</b></p><ul class=note>")
    out += [f"<li><b>{_e(name.replace('_', ' '))}</b>: {_e(text)}</li>" for name, text in data["definitions"].items()]
    out.append(f"<li><b>lead time source</b>: {_e(data['lead_time_source'])}</li></ul>")
    return out


def _warnings_html(warnings: list[dict[str, Any]]) -> list[str]:
    out = [f"<h2>Warnings ({len(warnings)})</h2>"]
    if not warnings:
        return out + ["<p>None.</p>"]
    for warning in warnings:
        out.append(f'<div class="warning" id="w-{_e(warning["code"])}"><b>{_e(warning["title"])}: '
                   f'{warning["count"]}</b><br>{_e(warning["advice"])}')
        rows = warning.get("listed", warning["examples"])
        if rows:
            out.append("<table><tr><th>file</th><th>row</th><th>what</th></tr>")
            out += [f"<tr><td>{_e(e['file'])}</td><td class=n>{e['row'] or ''}</td><td>{_e(e['detail'])}</td></tr>"
                    for e in rows]
            out.append("</table>")
            if warning["count"] > len(rows) and "listed" in warning:
                out.append(f"<p class=note>first {len(rows)} of {warning['count']} listed</p>")
        out.append("</div>")
    return out


def _charts_html(data: dict[str, Any]) -> list[str]:
    if data["all"] is None:
        return []
    groups = [data["all"], *data["groups"][:CHARTED_GROUPS]]
    out = ["<h2>Deployments per week, by status</h2>",
           f'<p class=note>{_e(data["definitions"]["weeks"])}. '
           + (f"The {CHARTED_GROUPS} entity / environment pairs with the most deployments are charted; the table "
              "above has all of them." if len(data["groups"]) > CHARTED_GROUPS else "") + "</p>"]
    charts = WeeklyCharts()
    for index, group in enumerate(groups):
        out.append(f'<div class="chart"><h3>{html.escape(group_name(group))}: {group["deployments"]} deployments, '
                   f'median {number(group["median_per_week"])} per week</h3>{charts.svg(group, index)}')
        out.append(_months_table(group))
        out.append("</div>")
    return out


def _months_table(group: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{m['month']}</td><td class=n>{m['deployments']}</td><td class=n>{m['failed']}</td>"
        f"<td class=n>{percent(m['change_failure_rate'])}</td></tr>" for m in group["months"])
    return ("<details><summary>per month: deployments and change failure rate</summary><table><tr><th>month</th>"
            f"<th>deployments</th><th>failed</th><th>change failure rate</th></tr>{rows}</table></details>")


class WeeklyCharts:
    """Deployments per week stacked by status, as inline SVG (matplotlib, text kept as text).

    One figure is drawn for every chart of the page: the axes, locators, legend and grid are made
    once, and each chart only swaps the two filled step polygons and the limits (a new figure per
    chart spent most of its time making axes and ticks)."""

    COLORS = {"success": "#2da44e", "failed": "#cf222e"}

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("svg", force=False)
        from matplotlib import dates as mdates
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        self._matplotlib, self._dates = matplotlib, mdates
        self._rc = {"svg.fonttype": "none", "text.parse_math": False, "font.family": "sans-serif", "font.size": 9}
        with matplotlib.rc_context(self._rc):
            self.figure = Figure(figsize=(10, 2.4), dpi=72)
            self.figure.subplots_adjust(left=0.07, right=0.97, bottom=0.14, top=0.86)
            ax = self.axes = self.figure.add_subplot()
            ax.set_ylabel("deployments per week")
            locator = mdates.AutoDateLocator(maxticks=8)  # ticks are most of matplotlib's time: few of them
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax.yaxis.get_major_locator().set_params(integer=True, nbins=4)
            ax.grid(axis="y", color="#d0d7de", linewidth=0.5)
            ax.legend(handles=[Patch(color=color, label=name) for name, color in self.COLORS.items()],
                      loc="lower right", bbox_to_anchor=(1, 1), frameon=False, ncols=2, borderaxespad=0.2)
        self._drawn: list[Any] = []

    def svg(self, group: dict[str, Any], index: int) -> str:
        import numpy as np

        weeks = group["weeks"]
        starts = np.array([w["start"] for w in weeks] + [_next_week(weeks[-1]["start"])], dtype="datetime64[D]")
        edges = self._dates.date2num(starts)
        success = np.array([w["success"] for w in weeks])
        failed = np.array([w["failed"] for w in weeks])
        for artist in self._drawn:
            artist.remove()
        ax = self.axes
        with self._matplotlib.rc_context({**self._rc, "svg.hashsalt": f"chart-{index}"}):
            # steps as two filled polygons (failed at the bottom, success on top): one path each, however
            # many weeks, where bars would be two shapes a week
            top, low = np.append(failed + success, 0), np.append(failed, 0)
            self._drawn = [
                ax.fill_between(edges, low, top, step="post", linewidth=0, color=self.COLORS["success"]),
                ax.fill_between(edges, 0, low, step="post", linewidth=0, color=self.COLORS["failed"]),
            ]
            ax.set_title(group_name(group)[:80], loc="left")
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(0, max(1, int((failed + success).max())) * 1.08)
            buffer = io.StringIO()
            self.figure.savefig(buffer, format="svg", metadata={"Date": None})
        svg = buffer.getvalue()
        return re.sub(r"\s*<metadata>.*?</metadata>", "", svg[svg.index("<svg"):], flags=re.S)


def weekly_chart(group: dict[str, Any], index: int) -> str:
    """One chart on its own (the page draws all of its charts with one WeeklyCharts)."""
    return WeeklyCharts().svg(group, index)


def _next_week(start: str) -> str:
    import numpy as np

    return str(np.datetime64(start, "D") + 7)
