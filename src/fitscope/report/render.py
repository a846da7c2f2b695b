"""The report's blocks (`fitscope.report.blocks`) written out: report.md (renders on GitHub,
images relative) and report.html (one self-contained file: images embedded, tables sortable with
a few lines of inline script, opens from disk with no server)."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pandas as pd

from fitscope.report.blocks import Block

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
    """report.md: renders on GitHub, images relative to the report folder. Every text that
    comes from the runs (config values, labels, reasons, names) is escaped: it reads as written
    and cannot add markup, HTML or table cells; `md` blocks are the report's own Markdown."""
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + markdown_text(content[0]))
        elif kind == "p":
            parts.append(markdown_text(content[0]))
        elif kind == "md":
            parts.append(content[0])
        elif kind == "table":
            parts.append(_markdown_table(content[0]))
        elif kind == "img":
            parts.append(f"![{markdown_text(content[1])}]({content[0].name})")
        elif kind == "code":
            parts.append(_code_block(content[0]))
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
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:12px}
.overfit{color:#c0392b}.underfit{color:#2471a3}.good-fit{color:#1e8449}
.not-converged{color:#7d3c98}
.diverged,.failed,.running{color:#777}
"""

# Click a column header to sort by it (numbers as numbers); click again to reverse.
SORT_SCRIPT = """
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
"""


def _html_table(frame: pd.DataFrame) -> str:
    if frame.index.name is not None:
        frame = frame.reset_index()
    table = frame.to_html(classes="sortable", border=0, na_rep="", index=False, escape=True)
    # Colour the diagnosis cells.
    table = re.sub(
        r"<td>(overfit|underfit|not converged|good fit|diverged|failed|running)</td>",
        lambda m: f'<td class="{m.group(1).replace(" ", "-")}">{m.group(1)}</td>',
        table,
    )
    return f'<div class="scroll">{table}</div>'


def html_page(blocks: list[Block], title: str) -> str:
    """report.html: one self-contained page (images embedded, no server, no external script)."""
    parts = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(content[0])}</p>")
        elif kind == "md":
            parts.append(_inline_markdown(content[0]))
        elif kind == "table":
            parts.append(_html_table(content[0]))
        elif kind == "img":
            data = base64.b64encode(content[0].read_bytes()).decode("ascii")
            parts.append(
                f'<p><img alt="{html.escape(content[1])}" src="data:image/png;base64,{data}"></p>'
            )
        elif kind == "code":
            parts.append(f"<pre>{html.escape(content[0])}</pre>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + f"\n<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )
