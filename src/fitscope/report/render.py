"""The report's blocks (`fitscope.report.blocks`) written out: report.md (renders on GitHub, its
charts as PNG files beside it) and report.html (one self-contained file: interactive plotly
charts with plotly's script inlined once, tables that sort and filter with a few lines of inline
script; it opens from disk with no server and no network)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from fitscope.report.blocks import Block
from fitscope.report.draw_html import html_div, plotly_script

# Characters that Markdown (GitHub's included) reads as markup anywhere in a line; `_` only
# where it can open or close emphasis, not inside a word such as grad_clip.
_MARKUP = re.compile(r"[\\`*\[\]|~$#]|(?<![^\W_])_|_(?![^\W_])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_text(text: object) -> str:
    """`text` as it reads, in a Markdown line or table cell: HTML (`<script>`, `<img ...>`) as
    text, markup characters escaped, `|` kept inside its cell, line breaks as spaces."""
    text = re.sub(r"\r\n|[\r\n]", " ", str(text))
    text = re.sub(r"[&<>]", lambda m: _ENTITIES[m.group()], text)
    return _MARKUP.sub(lambda m: "\\" + m.group(), text)


def _markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table; every text (header, index, cell) escaped, numbers as they are."""

    def cell(value: object) -> object:
        if value is None or isinstance(value, (int, float, np.number)):
            return value
        return markdown_text(value)

    frame = frame.map(cell)
    frame.index = frame.index.map(cell)
    frame.index.name = None if frame.index.name is None else markdown_text(frame.index.name)
    frame.columns = [markdown_text(c) for c in frame.columns]
    return frame.to_markdown()


def _code_block(text: str) -> str:
    """A fenced code block that no line of `text` can close: the fence is longer than any run
    of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def markdown(blocks: list[Block]) -> str:
    """report.md: renders on GitHub, charts as PNG files beside it. Every text that comes from
    the runs (config values, labels, reasons, names) is escaped: it reads as written and cannot
    add markup, HTML or table cells; `md` blocks are the report's own Markdown."""
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + markdown_text(content[0]))
        elif kind == "p":
            parts.append(markdown_text(content[0]))
        elif kind == "md":
            parts.append(content[0])
        elif kind == "list":
            parts.append("\n".join(f"- {markdown_text(item)}" for item in content[0]))
        elif kind == "table":
            parts.append(_markdown_table(content[0]))
        elif kind == "runs":
            _, listed, note = content
            parts += [markdown_text(note)] if note else []
            parts.append(_markdown_table(listed))
        elif kind == "chart":
            chart = content[0]
            parts.append(markdown_text(chart.caption))
            parts.append(f"![{markdown_text(chart.alt)}]({chart.name}.png)")
        elif kind == "code":
            parts.append(_code_block(content[0]))
        elif kind == "details":
            summary, text = content
            parts.append(
                f"<details><summary>{html.escape(summary)}</summary>\n\n{text}\n\n</details>"
            )
    return "\n\n".join(parts) + "\n"


def _inline_markdown(text: str) -> str:
    """The little Markdown the definitions use: list items, **bold**, *italic*, `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    items = re.split(r"\n- ", "\n" + text)[1:]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;
max-width:1240px;color:#222;padding:0 1em;line-height:1.45}
h2{border-bottom:1px solid #e5e5e5;padding-bottom:.2em;margin-top:1.6em}
nav{font-size:14px;margin:.5em 0 1em}nav a{margin-right:1em;white-space:nowrap}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}
td{max-width:36em}
.scroll{overflow-x:auto}
.tall{max-height:38em;overflow-y:auto;border-bottom:1px solid #ddd}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0;z-index:1}
td:first-child,th:first-child{text-align:left}
table.runs td:first-child{min-width:11em;max-width:17em}
table.runs td:nth-child(2){text-align:left;min-width:6em;max-width:12em}
table.runs td:last-child,table.runs th:last-child{text-align:left;min-width:18em;
max-width:32em;font-size:12px}
tr:nth-child(even) td{background:#fafafa}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:12px;max-height:30em}
.caption{color:#444;font-size:14px;max-width:62em}
.filter{font-size:14px;padding:3px 6px;width:24em;margin-right:1em}
details{margin-top:2em}summary{font-size:1.3em;font-weight:600;cursor:pointer}
.overfit{color:#c0392b}.underfit{color:#2471a3}.good-fit{color:#1e8449}
.not-converged{color:#7d3c98}
.diverged,.failed,.running{color:#777}
"""

# Click a column header to sort by it (numbers as numbers); click again to reverse. Type in a
# table's filter box to keep only the rows that contain the text.
TABLE_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.dataset.order !== 'asc';
    th.dataset.order = ascending ? 'asc' : 'desc';
    var value = function (row) {
      var text = row.children[index].textContent.trim(), number = parseFloat(text);
      return isNaN(number) ? text : number;
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = value(a), y = value(b);
      var order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                          : (typeof x === 'number' ? -1 : 1);
      return ascending ? order : -order;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
document.querySelectorAll('input.filter').forEach(function (box) {
  var table = document.getElementById(box.dataset.table), count = box.nextElementSibling;
  box.addEventListener('input', function () {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    Array.from(table.tBodies[0].rows).forEach(function (row) {
      var text = row.textContent.toLowerCase();
      var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
      row.style.display = keep ? '' : 'none';
      shown += keep ? 1 : 0;
    });
    count.textContent = shown + ' of ' + table.tBodies[0].rows.length + ' runs';
  });
});
"""


def _html_table(
    frame: pd.DataFrame, name: str = "", css: str = "sortable", box: str = "scroll"
) -> str:
    if frame.index.name is not None:
        frame = frame.reset_index()
    table = frame.to_html(
        classes=css, border=0, na_rep="", index=False, escape=True, table_id=name or None
    )
    # Colour the diagnosis cells.
    table = re.sub(
        r"<td>(overfit|underfit|not converged|good fit|diverged|failed|running)((?:; [^<]*)?)</td>",
        lambda m: f'<td class="{m.group(1).replace(" ", "-")}">{m.group(1)}{m.group(2)}</td>',
        table,
    )
    return f'<div class="{box}">{table}</div>'


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _html_block(kind: str, content: list) -> str:
    if kind in ("h1", "h2", "h3"):
        anchor = f' id="{_slug(content[0])}"' if kind == "h2" else ""
        return f"<{kind}{anchor}>{html.escape(content[0])}</{kind}>"
    if kind == "p":
        return f"<p>{html.escape(content[0])}</p>"
    if kind == "md":
        return _inline_markdown(content[0])
    if kind == "list":
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in content[0]) + "</ul>"
    if kind == "table":
        return _html_table(content[0])
    if kind == "runs":
        rows = len(content[0])
        box = (
            '<p><input class="filter" data-table="run-table" placeholder="filter runs: overfit '
            f'relu ..."><span>{rows} of {rows} runs</span></p>'
        )
        return box + _html_table(content[0], "run-table", "sortable runs", "scroll tall")
    if kind == "chart":
        chart = content[0]
        caption = f'<p class="caption">{html.escape(chart.caption)}</p>'
        return f'<figure id="{chart.name}">{caption}{html_div(chart)}</figure>'
    if kind == "code":
        return f"<pre>{html.escape(content[0])}</pre>"
    if kind == "details":
        summary = f"<summary>{html.escape(content[0])}</summary>"
        return f"<details>{summary}{_inline_markdown(content[1])}</details>"
    raise ValueError(f"unknown block {kind}")


def html_page(blocks: list[Block], title: str) -> str:
    """report.html: one self-contained page (plotly's script inlined once, no server, no
    network), with links to its sections at the top."""
    parts = [_html_block(kind, content) for kind, *content in blocks]
    sections = [content[0] for kind, *content in blocks if kind == "h2"]
    nav = (
        "<nav>"
        # a space between links: the line may break there (each link itself never breaks)
        + " ".join(f'<a href="#{_slug(s)}">{html.escape(s)}</a>' for s in sections)
        + "</nav>"
    )
    parts.insert(2, nav)  # after the title and the summary line
    script = ""
    if any(kind == "chart" for kind, *_ in blocks):
        script = f'<script type="text/javascript">{plotly_script()}</script>'
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>{script}</head><body>\n"
        + "\n".join(parts)
        + f"\n<script>{TABLE_SCRIPT}</script>\n</body></html>\n"
    )
