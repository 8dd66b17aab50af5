"""The report of `kdrun-report`, written twice from the same sections:

- `report.html`: one self-contained file (inline CSS, figures embedded as base64 data URIs, no
  scripts, fonts or links to fetch) so it opens offline and can be mailed or archived alone;
- `report.md`: Markdown tables and links to `figures/<name>.png` beside it.

All text from runs (titles, column names, cells) is escaped in both.
"""

from __future__ import annotations

import base64
import math
import mimetypes
import re
import shutil
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup

# Column names that hold p-values (p, p_value, p_bh, q, pvalue, p-value, …): tiny values in these
# are what the reader looks for, so they are shown in scientific notation instead of as 0.
P_VALUE_COLUMN = re.compile(r"(^|[\s_/.\-(])(p|q|pval|pvalue|p[_\-\s]?value|p[_\-]?adj|p[_\-]?bh|q[_\-]?value)"
                            r"($|[\s_/.\-)])", re.IGNORECASE)
SIGNIFICANT_DIGITS = 4
MISSING = "–"


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# numbers


def is_p_value_column(name) -> bool:
    return bool(P_VALUE_COLUMN.search(str(name)))


def format_value(value, p_value: bool = False) -> str:
    """A table cell as text: 4 significant digits, integers in full, small p-values as 1.2e-05."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        value = float(value)
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if p_value and magnitude < 1e-3:
            return f"{value:.2e}"
        if magnitude >= 10 ** SIGNIFICANT_DIGITS:
            # Large values (steps, sample counts, seconds) read better whole than as 1.235e+04.
            return f"{value:.0f}" if magnitude < 1e15 else f"{value:.3e}"
        if magnitude < 1e-3:
            return f"{value:.3e}"
        text = f"{value:.{SIGNIFICANT_DIGITS}g}"
        return text
    return str(value)


def table_cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, formatted rows, and which columns are numeric (right-aligned)."""
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()
    headers = [" / ".join(map(str, column)) if isinstance(column, tuple) else str(column)
               for column in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
               for column in frame.columns]
    p_columns = [is_p_value_column(header) for header in headers]
    rows = [[format_value(value, p_columns[j]) for j, value in enumerate(row)]
            for row in frame.itertuples(index=False, name=None)]
    return headers, rows, numeric


# --------------------------------------------------------------------------------------------
# Markdown


def _markdown_cell(text: str) -> str:
    # A pipe ends the cell and a newline ends the row; both would break the table.
    text = _markdown_text(text.replace("\\", "\\\\"))
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    headers, rows, numeric = table_cells(frame)
    if not headers:
        return "_(empty table)_"
    cells = [[_markdown_cell(h) for h in headers]] + [[_markdown_cell(c) for c in row] for row in rows]
    widths = [max(3, *(len(row[j]) for row in cells)) for j in range(len(headers))]
    rule = ["-" * (w - 1) + ":" if numeric[j] else "-" * w for j, w in enumerate(widths)]

    def line(row):
        return "| " + " | ".join(cell.rjust(widths[j]) if numeric[j] else cell.ljust(widths[j])
                                 for j, cell in enumerate(row)) + " |"

    lines = [line(cells[0]), "| " + " | ".join(rule) + " |"] + [line(row) for row in cells[1:]]
    if not rows:
        lines.append("")
        lines.append("_(no rows)_")
    return "\n".join(lines)


def _markdown_text(text: str) -> str:
    # The section text is the author's own prose; only raw HTML is neutralised, so that the
    # Markdown viewer shows it as text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _copy_figures(out_dir: Path, sections: list[Section]) -> dict[Path, str]:
    """Each figure's path relative to out_dir (figures/<name>), copying it there if it lives
    elsewhere; figures already in out_dir/figures stay as they are."""
    figure_dir = out_dir / "figures"
    # In order of appearance, so the first figure of a file name keeps it.
    sources = list(dict.fromkeys(Path(path).resolve() for section in sections for _, path in section.figures))
    relative = {source: f"figures/{source.name}" for source in sources
                if source.parent == figure_dir.resolve()}
    taken = {name.split("/", 1)[1] for name in relative.values()}
    for source in [source for source in sources if source not in relative]:
        # Two figures with one file name from different directories must not overwrite each other.
        name, counter = source.name, 2
        while name in taken:
            name, counter = f"{source.stem}_{counter}{source.suffix}", counter + 1
        figure_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, figure_dir / name)
        taken.add(name)
        relative[source] = f"figures/{name}"
    return relative


def _markdown(title: str, sections: list[Section], figure_paths: dict[Path, str]) -> str:
    parts = [f"# {_markdown_text(title)}", "", "## Contents", ""]
    parts += [f"{i}. [{_markdown_text(s.title)}](#{_anchor(i)})" for i, s in enumerate(sections, 1)]
    for i, section in enumerate(sections, 1):
        parts += ["", f'<a id="{_anchor(i)}"></a>', "", f"## {i}. {_markdown_text(section.title)}", ""]
        if section.text:
            parts += [_markdown_text(section.text.strip()), ""]
        for caption, frame in section.tables:
            parts += [f"**{_markdown_text(caption)}**", "", markdown_table(frame), ""]
        for caption, path in section.figures:
            alt = _markdown_text(caption).replace("[", "(").replace("]", ")")
            parts += [f"![{alt}]({figure_paths[Path(path).resolve()]})", "", f"*{_markdown_text(caption)}*", ""]
    return "\n".join(parts).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# HTML


def _anchor(index: int) -> str:
    return f"section-{index}"


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def _paragraphs(text: str) -> list[str]:
    return [block.strip() for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]


STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --rule: #d1d9e0; --stripe: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; border-bottom: 1px solid var(--rule); padding-bottom: 0.3em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid var(--rule); padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
nav.toc { background: var(--stripe); border: 1px solid var(--rule); border-radius: 6px; padding: 10px 20px; }
nav.toc ol { margin: 0.3em 0; padding-left: 1.4em; }
nav.toc ul { margin: 0; padding-left: 1.2em; font-size: 0.9em; color: var(--muted); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
p { margin: 0.6em 0; white-space: pre-line; }
.table-wrap { display: block; width: fit-content; max-width: 100%; overflow-x: auto; margin: 0.4em 0 1.2em; border: 1px solid var(--rule); border-radius: 6px; }
table { border-collapse: collapse; font-size: 0.88em; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: left; white-space: nowrap; }
th { background: var(--stripe); position: sticky; top: 0; font-weight: 600; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tbody tr:hover td { background: #eef4fb; }
.empty { color: var(--muted); font-style: italic; }
figure { margin: 1em 0 2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.9em; margin-top: 0.4em; }
footer { margin-top: 3em; color: var(--muted); font-size: 0.85em; }
@media print { nav.toc { display: none; } h2 { page-break-before: auto; } figure, .table-wrap { page-break-inside: avoid; } }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
<nav class="toc" aria-label="Contents">
<strong>Contents</strong>
<ol>
{%- for section in sections %}
<li><a href="#{{ section.anchor }}">{{ section.title }}</a>
{%- if section.contents %}<ul>{% for item in section.contents %}<li><a href="#{{ item.anchor }}">{{ item.caption }}</a></li>{% endfor %}</ul>{% endif -%}
</li>
{%- endfor %}
</ol>
</nav>
{% for section in sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.number }}. {{ section.title }}</h2>
{%- for paragraph in section.paragraphs %}
<p>{{ paragraph }}</p>
{%- endfor %}
{%- for table in section.tables %}
<h3 id="{{ table.anchor }}">{{ table.caption }}</h3>
{%- if table.headers %}
<div class="table-wrap"><table>
<thead><tr>{% for header in table.headers %}<th{% if table.numeric[loop.index0] %} class="num"{% endif %}>{{ header }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for row in table.rows %}
<tr>{% for cell in row %}<td{% if table.numeric[loop.index0] %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{%- endfor %}
</tbody>
</table></div>
{%- if not table.rows %}<p class="empty">(no rows)</p>{% endif %}
{%- else %}
<p class="empty">(empty table)</p>
{%- endif %}
{%- endfor %}
{%- for figure in section.figures %}
<figure id="{{ figure.anchor }}">
<img src="{{ figure.src }}" alt="{{ figure.caption }}">
<figcaption>{{ figure.caption }}</figcaption>
</figure>
{%- endfor %}
</section>
{% endfor %}
<footer>Written by kdrun-report. This file is self-contained: figures are embedded, nothing is fetched.</footer>
</main>
</body>
</html>
"""


def _html(title: str, sections: list[Section]) -> str:
    context = []
    for i, section in enumerate(sections, 1):
        anchor = _anchor(i)
        tables = []
        for j, (caption, frame) in enumerate(section.tables, 1):
            headers, rows, numeric = table_cells(frame)
            tables.append({"anchor": f"{anchor}-table-{j}", "caption": caption, "headers": headers,
                           "rows": rows, "numeric": numeric})
        figures = [{"anchor": f"{anchor}-figure-{j}", "caption": caption, "src": _data_uri(Path(path))}
                   for j, (caption, path) in enumerate(section.figures, 1)]
        context.append({"anchor": anchor, "number": i, "title": section.title,
                        "paragraphs": _paragraphs(section.text), "tables": tables, "figures": figures,
                        "contents": tables + figures})
    environment = Environment(autoescape=True, keep_trailing_newline=True)
    return environment.from_string(TEMPLATE).render(
        # The style sheet is the module's own constant; escaping would break its quotes.
        title=title, style=Markup(STYLE), sections=context)


# --------------------------------------------------------------------------------------------


def write_report(out_dir: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write out_dir/report.html (self-contained) and out_dir/report.md (figures in
    out_dir/figures/); return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for caption, path in section.figures:
            if not Path(path).is_file():
                raise FileNotFoundError(f"report figure {caption!r}: no such file {path}")
    html_path, markdown_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(_html(title, sections), encoding="utf-8")
    figure_paths = _copy_figures(out_dir, sections)
    markdown_path.write_text(_markdown(title, sections, figure_paths), encoding="utf-8")
    return html_path, markdown_path
