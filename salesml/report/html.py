"""A tiny HTML builder that escapes every value unless it is already `Html`.

All user data (deal ids, feature names, reasons, messages) reaches the page through `tag` or
`escape`, so a value like `<script>` is shown as text, never run. Only the builder itself and
`trusted` (for SVG that matplotlib wrote and escaped) create `Html`.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable


class Html(str):
    """A string of safe HTML (built here or escaped)."""

    __slots__ = ()


def escape(value: object) -> Html:
    """`value` as HTML text: Html passes through; None is empty; anything else is escaped."""
    if isinstance(value, Html):
        return value
    return Html(_html.escape("" if value is None else str(value), quote=True))


def trusted(markup: str) -> Html:
    """Mark markup produced by a library that escapes its own text (matplotlib SVG)."""
    return Html(markup)


def _attr_name(name: str) -> str:
    return name.rstrip("_").replace("_", "-")


def tag(name: str, *children: object, **attrs: object) -> Html:
    """`<name attrs>children</name>`; `class_=` gives class, `data_x=` gives data-x.

    An attribute that is None or False is left out; True gives a bare attribute.
    """
    parts = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {_attr_name(key)}")
        else:
            parts.append(f' {_attr_name(key)}="{_html.escape(str(value), quote=True)}"')
    inner = "".join(escape(child) for child in children if child is not None)
    return Html(f"<{name}{''.join(parts)}>{inner}</{name}>")


def join(parts: Iterable[object]) -> Html:
    """Concatenate, escaping what is not Html."""
    return Html("".join(escape(part) for part in parts))


def table(
    headers: list[str],
    rows: Iterable[list[object]],
    numeric: Iterable[int] = (),
    nowrap: Iterable[int] = (),
    **attrs: object,
) -> Html:
    """A table; columns in `numeric` are right-aligned, those in `nowrap` never wrap."""
    classes = {i: "num" for i in numeric}
    classes.update({i: "nowrap" for i in nowrap if i not in classes})
    head = tag(
        "thead",
        tag("tr", *(tag("th", h, class_=classes.get(i)) for i, h in enumerate(headers))),
    )
    body = tag(
        "tbody",
        *(
            tag("tr", *(tag("td", c, class_=classes.get(i)) for i, c in enumerate(row)))
            for row in rows
        ),
    )
    return tag("table", head, body, **attrs)


STYLE = """
:root{--red:#c0392b;--yellow:#e0a800;--green:#2e8b57;--ink:#1f2933;--muted:#52606d;
--line:#e4e7eb;--bg:#f3f5f8;--accent:#1f5fbf}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",
Arial,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#102a43;color:#fff;padding:18px 32px 14px}
header h1{margin:0;font-size:22px;font-weight:600}
header .meta{color:#bcccdc;font-size:13px;margin-top:4px}
nav{background:#fff;border-bottom:1px solid var(--line);
padding:8px 32px;font-size:13px}
nav a{margin-right:18px;color:var(--accent);text-decoration:none}
nav a:hover{text-decoration:underline}
main{max-width:1200px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 24px;
margin:18px 0}
h2{margin:0 0 6px;font-size:19px}
h3{margin:18px 0 2px;font-size:15px}
p{margin:6px 0}
.lead{color:var(--muted);margin:0 0 8px}
.guide{color:var(--muted);font-size:12.5px;margin:0 0 8px;font-style:italic}
.note{background:#fffbea;border-left:4px solid #f0b429;padding:8px 12px;margin:8px 0;
color:#513c06;font-size:13px}
.note code,.lead code{background:#f0f4f8;padding:0 4px;border-radius:3px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(185px,1fr));gap:12px;
margin:16px 0 4px}
.kpi{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.kpi .v{font-size:22px;font-weight:600;white-space:nowrap}
.kpi .k{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th{background:#f0f4f8;font-weight:600;color:#334e68}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nowrap{white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
.badge{display:inline-block;min-width:52px;text-align:center;padding:1px 8px;
border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.badge.red{background:var(--red)}.badge.yellow{background:#f0b429;color:#3d2b00}
.badge.green{background:var(--green)}.badge.other{background:#7b8794}
figure.chart{margin:10px 0 4px}
figure.chart h3{margin-top:4px}
figure.chart svg{display:block;width:100%;height:auto}
figure.chart img{display:block;max-width:100%;height:auto}
.deal{display:grid;grid-template-columns:minmax(260px,2fr) 3fr;gap:18px;
border-top:1px solid var(--line);padding:12px 0}
.deal .id{font-size:15px;font-weight:600}
.deal .prob{font-size:26px;font-weight:600;margin:2px 0}
.deal ul{margin:4px 0;padding-left:18px}
.deal .facts{color:var(--muted);font-size:12.5px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.small{font-size:12px;color:var(--muted)}
footer{color:var(--muted);font-size:12px;text-align:center;padding:12px}
@media (max-width:900px){.deal,.grid2{grid-template-columns:1fr}}
@media print{nav{display:none}section{break-inside:avoid}body{background:#fff}}
"""
