"""The report's HTML pages: sections of figures and tables, written as one self-contained page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Section:
    title: str
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (PNG, caption)
    html: str = ""  # extra content (tables)


def write_page(sections: list[Section], out: Path, name: str = "index.html", title: str = "hpa_ray report") -> Path:
    parts = []
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        for path, caption in section.figures:
            # onload/onerror mark each figure (data-state), for people and for the tests
            parts.append(f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(caption)}" '
                         "onload=\"this.dataset.state='loaded'\" onerror=\"this.dataset.state='broken'\">"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
        parts.append(section.html + "</section>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}img{max-width:100%}"
        "figure{margin:1em 0}figcaption{color:#444;font-size:0.9em}td,th{border:1px solid #ccc;padding:2px 6px}"
        f"table{{border-collapse:collapse;font-size:0.9em}}</style></head><body><h1>{title}</h1>"
        + "".join(parts)
        + "</body></html>\n"
    )
    (out / name).write_text(page)
    return out / name
