"""The big corpus's documents, per domain, each named by its source.

A document's name (`source`) decides its split (`lab.corpus.build.split_of`, the shipped corpus's rule),
so names are stable: a package's name and version and the path inside it, plus `#n` for the n-th
section. The shipped corpus's documents come first, with their own names, so each keeps its split.

- english:    the Python 3.11 and Sphinx documentation (reStructuredText, one document per section), the
              Django 3.2 and PostgreSQL 15 documentation (HTML pages' main text), Git's manual pages and
              guides (AsciiDoc);
- chinese:    classical poetry in the layout of the shipped poems (《title》, 作者：author, lines):
              the Tang poems, the Song ci and a hash-chosen share of the Song poems, in simplified characters;
- code:       the standard library of the running Python, tests included, 0.5-200 kB per file;
- arithmetic: more seeded problems of the shipped kind, each document from its own generator.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import sysconfig
from pathlib import Path

from lab.corpus.text import DOCBOOK_MAIN, html_main_text, render_rst, rst_sections

# ----- english ---------------------------------------------------------------------------------------


# A page longer than this is cut at its section titles; shorter ones stay one document.
LONG_PAGE_CHARS = 30_000
# Shorter pieces (navigation stubs, empty sections) carry no prose worth training on.
MIN_PAGE_CHARS = 200


def rst_source_documents(sources: Path, name: str, skip: tuple[str, ...] = ()) -> list[dict]:
    """Sphinx's `_sources/*.rst.txt` under `sources`, rendered as help() shows them, one document per section."""
    docs = []
    for path in sorted(sources.rglob("*.rst.txt")):
        rel = path.relative_to(sources).as_posix()
        if rel.startswith(skip):
            continue
        for n, section in enumerate(rst_sections(render_rst(path.read_text(encoding="utf-8")))):
            docs.append({"domain": "english", "source": f"{name}/{rel}#{n}", "text": section})
    return docs


def page_documents(pages: Path, pattern: str, name: str, page_text, skip: tuple[str, ...] = ()) -> list[dict]:
    """Every page under `pages` matching `pattern`, as `page_text(raw)` gives its text: one document, or
    one per section when the page is long; pieces under MIN_PAGE_CHARS are dropped."""
    docs = []
    for path in sorted(pages.rglob(pattern)):
        rel = path.relative_to(pages).as_posix()
        if rel.startswith(skip):
            continue
        text = page_text(path.read_text(encoding="utf-8", errors="replace"))
        for n, section in enumerate(rst_sections(text) if len(text) > LONG_PAGE_CHARS else [text]):
            if len(section) >= MIN_PAGE_CHARS:
                docs.append({"domain": "english", "source": f"{name}/{rel}#{n}", "text": section})
    return docs


def python_doc_documents(root: Path, version: str) -> list[dict]:
    # The changelog's one-line entries name issue numbers; they are not prose.
    return rst_source_documents(root / "usr/share/doc/python3.11/html/_sources", f"python3.11-doc-{version}",
                                skip=("whatsnew/changelog",))


def sphinx_doc_documents(root: Path, version: str) -> list[dict]:
    return rst_source_documents(root / "usr/share/doc/sphinx-doc/html/_sources", f"sphinx-doc-{version}")


def django_doc_documents(root: Path, version: str) -> list[dict]:
    return page_documents(root / "usr/share/doc/python-django-doc/html", "*.html", f"python-django-doc-{version}",
                          html_main_text, skip=("_", "genindex", "py-modindex", "search"))


def postgresql_doc_documents(root: Path, version: str) -> list[dict]:
    pages = next((root / "usr/share/doc").glob("postgresql-doc-*/html"))
    return page_documents(pages, "*.html", f"postgresql-doc-{version}",
                          lambda raw: html_main_text(raw, *DOCBOOK_MAIN))


def git_doc_documents(root: Path, version: str) -> list[dict]:
    return page_documents(root / "usr/share/doc/git-doc", "*.txt", f"git-doc-{version}", str.strip)


# ----- chinese ---------------------------------------------------------------------------------------

# Song poems are many (about 250,000); a share of them, chosen by a hash of the poem's id, balances the
# domain against the others.
SONG_POEM_PERCENT = 12


def _poem_text(poem: dict, to_simplified) -> str | None:
    lines = [line.strip() for line in poem.get("paragraphs") or [] if isinstance(line, str) and line.strip()]
    if not lines:
        return None
    title = poem.get("title") or poem.get("rhythmic") or ""
    head = [f"《{title}》"] if title else []
    if poem.get("author"):
        head.append(f"作者：{poem['author']}")
    return to_simplified("\n".join(head + lines))


def _chosen(poem_id: str, percent: int) -> bool:
    return int(hashlib.sha256(poem_id.encode()).hexdigest(), 16) % 100 < percent


def chinese_poetry_documents(root: Path, version: str) -> list[dict]:
    import opencc  # converts the traditional characters of the Tang and Song poems to simplified ones

    converter = opencc.OpenCC("t2s")
    dist = root / "dist"
    files = [(path, 100) for path in sorted((dist / "quantangshi").glob("poet.tang.*.json"))]
    files += [(path, SONG_POEM_PERCENT) for path in sorted((dist / "quantangshi").glob("poet.song.*.json"))]
    files += [(path, 100) for path in sorted((dist / "songci").glob("ci.song.*.json"))]
    docs = []
    for path, percent in files:
        for n, poem in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            name = f"chinese-poetry-{version}/{path.relative_to(dist).as_posix()}#{n}"
            if percent < 100 and not _chosen(name, percent):
                continue
            text = _poem_text(poem, converter.convert)
            if text is not None:
                docs.append({"domain": "chinese", "source": name, "text": text})
    return docs


# ----- code ------------------------------------------------------------------------------------------

# Not code a model should learn from: generated tables, the rendered documentation (the English
# validation text lives in pydoc_data), bundled wheels, build configuration.
_CODE_SKIP_DIRS = {"site-packages", "encodings", "pydoc_data", "ensurepip", "__pycache__"}


def stdlib_code_documents(min_bytes: int = 500, max_bytes: int = 200_000) -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tag = f"cpython-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    docs = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if _CODE_SKIP_DIRS & set(rel.parts[:-1]) or rel.parts[0].startswith("config-"):
            continue
        if not min_bytes <= path.stat().st_size <= max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a few tests hold files in other encodings on purpose
            continue
        # The same name as the shipped corpus gives its files, so a shipped file keeps its split.
        docs.append({"domain": "code", "source": f"{tag}/Lib/{rel.as_posix()}", "text": text.strip("\n") + "\n"})
    return docs


# ----- arithmetic ------------------------------------------------------------------------------------

ARITHMETIC_DOCS = 11_000
LINES_PER_DOC = 24


def arithmetic_line(rng: random.Random) -> str:
    """The shipped kind: addition and subtraction up to 3 digits, multiplication up to 2 by 2 digits."""
    op = rng.choice("+-*")
    digits = (1, 2) if op == "*" else (1, 2, 3)
    a = rng.randrange(10 ** rng.choice(digits))
    b = rng.randrange(10 ** rng.choice(digits))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return f"{a} {op} {b} = {value}"


def arithmetic_documents(n_documents: int = ARITHMETIC_DOCS) -> list[dict]:
    docs = []
    for n in range(n_documents):
        # Each document from its own generator: any count gives the same first documents.
        rng = random.Random(f"lab.corpus.arithmetic/{n}")
        docs.append({"domain": "arithmetic", "source": f"generated/lab.corpus.arithmetic#{n}",
                     "text": "\n".join(arithmetic_line(rng) for _ in range(LINES_PER_DOC))})
    return docs
