"""Plain text out of documentation sources: reStructuredText sections and Sphinx HTML pages.

The shipped English validation text is Python's documentation as `help()` renders it (roles and
literals already turned into quoted words). Documentation sources are brought close to that: roles
such as :func:`len` become their text, ``literals`` become "literals", index directives go; the
prose, the examples and the headings stay.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# A heading: a line of text underlined by a line of one repeated punctuation character.
_HEADING = re.compile(r"^(.+)\n([*=\-~^\"'`#+])\2{2,}$", re.MULTILINE)
# :role:`text`, :role:`title <target>`, :role:`~module.name`; the title or the last name is what renders.
_ROLE = re.compile(r":[a-zA-Z][\w:+-]*:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_INDEX = re.compile(r"^\.\. index::.*(?:\n(?:[ \t]+.*|[ \t]*))*", re.MULTILINE)


def _role_text(match: re.Match) -> str:
    text = match.group(1)
    titled = re.match(r"(.+?)\s*<[^>]+>$", text, re.DOTALL)
    if titled:
        return titled.group(1)
    return text.lstrip("~!").split(".")[-1] if text.startswith("~") else text.lstrip("!")


def render_rst(text: str) -> str:
    """reStructuredText with its inline markup rendered the way `help()` shows it."""
    text = _INDEX.sub("", text)
    text = _ROLE.sub(lambda m: '"' + _role_text(m) + '"', text)
    return _LITERAL.sub(r'"\1"', text)


def rst_sections(text: str, min_chars: int = 200) -> list[str]:
    """A document cut at its headings; sections shorter than `min_chars` (a bare heading) are dropped."""
    starts = sorted({0} | {m.start() for m in _HEADING.finditer(text)})
    sections = [text[a:b].strip() for a, b in zip(starts, starts[1:] + [len(text)])]
    return [s for s in sections if len(s) >= min_chars]


class _MainText(HTMLParser):
    """The text of a Sphinx page's main column, with a line break at every block element."""

    BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "tr", "dt", "dd", "br",
              "table", "ul", "ol", "dl", "blockquote"}
    SKIPPED = {"script", "style"}

    def __init__(self, start: tuple[str, str, str], stop: tuple[str, str, str]):
        super().__init__(convert_charrefs=True)
        self.start, self.stop = start, stop
        self.inside = self.done = False
        self.skip_depth = 0
        self.parts: list[str] = []

    @staticmethod
    def _matches(tag: str, attrs: dict, rule: tuple[str, str, tuple[str, ...]]) -> bool:
        name, key, values = rule
        return tag == name and not set(values).isdisjoint((attrs.get(key) or "").split())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self._matches(tag, attrs, self.stop):
            self.inside, self.done = False, True
        elif not self.done and self._matches(tag, attrs, self.start):
            self.inside = True
        if not self.inside:
            return
        if tag in self.SKIPPED or "headerlink" in (attrs.get("class") or "").split():
            self.skip_depth += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if not self.inside:
            return
        if self.skip_depth and (tag in self.SKIPPED or tag == "a"):
            self.skip_depth -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.inside and not self.skip_depth:
            self.parts.append(data)


# The main column of the Django documentation's Sphinx theme, and where its sidebar starts.
SPHINX_MAIN = (("div", "class", ("yui-g",)), ("div", "id", ("sidebar",)))
# PostgreSQL's DocBook pages: the first content division, up to the navigation footer.
DOCBOOK_MAIN = (("div", "class", ("book", "set", "part", "chapter", "preface", "appendix", "reference", "refentry",
                                  "sect1", "sect2", "index", "bibliography", "glossary")),
                ("div", "class", ("navfooter",)))


def html_main_text(html: str, start=SPHINX_MAIN[0], stop=SPHINX_MAIN[1]) -> str:
    """The main text of an HTML page: from the first `start` element to the first `stop` element.

    `start` and `stop` are (tag, attribute, accepted values): an element matches when one of the
    values is among the attribute's space-separated words.
    Runs of blank lines are folded to one; trailing spaces go.
    """
    parser = _MainText(start, stop)
    parser.feed(html)
    lines = [line.rstrip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
