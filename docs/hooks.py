"""MkDocs hooks of the documentation site (registered under ``hooks:`` in mkdocs.yml).

Two jobs, both on each page's Markdown before it is rendered:

1. **The state-size table.** A line that is exactly ``<!-- state-size table -->`` is replaced by
   the table that :func:`hybrids.mixers.state_size_table` returns (one row per mixer and
   condition: the formula of ``state_size(L)`` and what is kept), so the site shows the formulas
   the code itself holds.

2. **Links that work on GitHub and on the site.** Pages are written with links that are true in
   the repository: ``docs/gpu.md`` links ``../results/2026-12-06-triton-compile-report.md`` and a
   results page links ``../docs/gpu.md``. On the site, ``docs/`` is the root and ``results/`` is
   reached through the link ``docs/results -> ../results``, so each relative link is resolved
   against the page's place in the repository and rewritten to its place on the site. A link to
   anything outside ``docs/`` and ``results/`` is left as written, and ``mkdocs build --strict``
   then fails on it: the site cannot serve source files, so pages name them in code spans.
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

MARKER = "<!-- state-size table -->"

# An inline Markdown link or image target: ](target) or ](target "title").
_LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def state_size_table() -> str:
    """The Markdown table of :func:`hybrids.mixers.state_size_table`: the rules the mixer classes
    state in code."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from hybrids.mixers import state_size_table as table

    return table()


def _repository_path(src_uri: str) -> str:
    """Where a page of the site lives in the repository."""
    return src_uri if src_uri.startswith("results/") else f"docs/{src_uri}"


def _site_path(repository_path: str) -> str | None:
    """Where a file of the repository lives on the site, or None if the site does not hold it."""
    if repository_path.startswith("docs/"):
        return repository_path[len("docs/") :]
    if repository_path.startswith("results/"):
        return repository_path
    return None


def rewrite_links(markdown: str, src_uri: str) -> str:
    """Rewrite the page's relative links from repository paths to site paths (module docstring)."""
    page_dir = posixpath.dirname(_repository_path(src_uri))
    site_dir = posixpath.dirname(src_uri)

    def replace(match: re.Match) -> str:
        target = match.group(2)
        if target.startswith(("#", "/")) or _SCHEME.match(target):
            return match.group(0)
        path, hash_, anchor = target.partition("#")
        site = _site_path(posixpath.normpath(posixpath.join(page_dir, path)))
        if site is None:
            return match.group(0)
        new = posixpath.relpath(site, site_dir or ".") + hash_ + anchor
        return match.group(1) + new + match.group(3)

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if any(line.strip() == MARKER for line in markdown.splitlines()):
        table = state_size_table().strip("\n")
        markdown = "\n".join(table if line.strip() == MARKER else line for line in markdown.splitlines()) + "\n"
    return rewrite_links(markdown, page.file.src_uri)
