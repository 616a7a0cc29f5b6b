"""Build the shipped corpus (data/corpus.jsonl) and its tokenizer (data/tokenizer.json).

    python data/build_corpus.py            # corpus, then tokenizer
    python data/build_corpus.py --check    # build into a temporary folder and compare with the committed files

Four domains, every document labelled with its domain and its source:
- english:    the topics of Python's documentation (`pydoc_data.topics`), one document per section;
- chinese:    classical Chinese poetry and prose from Debian's fortunes-zh (Tang and Song poems, the
              Book of Songs, the Analects, Dao De Jing, Caigentan, Zengguang Xianwen), one per entry;
- code:       a fixed, hash-chosen subset of the Python standard library's own .py files, one per file;
- arithmetic: generated, seeded problems such as "37 + 85 = 122", one document per block of lines.

The output is deterministic: the same sources (same Python version, same fortunes-zh version) give
byte-identical files. The validation split is chosen per document by a hash of its domain and source,
so it never moves when documents are added elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import unicodedata
from pathlib import Path

from lab.corpus.documents import arithmetic_line
from lab.data import split_of

HERE = Path(__file__).resolve().parent

# --- english ---------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(.+)\n([*=\-~^\"'`#+])\2{2,}$", re.MULTILINE)


def english_documents() -> list[dict]:
    """One document per section of each documentation topic (headings are underlined with * = - ...)."""
    import pydoc_data.topics

    docs = []
    for topic in sorted(pydoc_data.topics.topics):
        text = pydoc_data.topics.topics[topic]
        starts = sorted({0} | {m.start() for m in _HEADING.finditer(text)})
        for n, (a, b) in enumerate(zip(starts, starts[1:] + [len(text)])):
            section = text[a:b].strip()
            if len(section) >= 200:  # a heading with no body is not a document
                docs.append({"domain": "english", "source": f"pydoc_data.topics/{topic}#{n}", "text": section})
    return docs


# --- chinese ---------------------------------------------------------------------------------------

FORTUNES_ZH_VERSION = "2.98"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# From the mixed `chinese` file only classical works (authors dead for many centuries: public domain) are
# taken, and poems by the poets of the two anthologies; modern prose, manuals and proverbs are left out.
_CLASSICAL_WORKS = ("詩經", "论语", "道德经", "菜根谭", "增广贤文")


def fortunes_zh_dir(workdir: Path) -> tuple[Path, str]:
    """The folder holding tang300, song100, chinese: the installed package's, or a downloaded .deb's."""
    installed = Path("/usr/share/games/fortunes")
    if (installed / "tang300").is_file() and (installed / "chinese").is_file():
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "fortunes-zh"],
                                 capture_output=True, text=True).stdout.strip() or "unknown"
        return installed, version
    subprocess.run(["apt-get", "download", "fortunes-zh"], cwd=workdir, check=True, capture_output=True)
    deb = next(workdir.glob("fortunes-zh_*.deb"))
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True)
    return workdir / "root/usr/share/games/fortunes", version


def _clean_entry(entry: str) -> str:
    lines = [line.rstrip() for line in _ANSI.sub("", entry).split("\n")]
    return "\n".join(lines).strip("\n")


def _is_chinese(text: str, min_share: float = 0.6) -> bool:
    """Mostly CJK characters and no Latin letters: keeps poems, drops manuals and mixed text."""
    chars = [c for c in text if not c.isspace()]
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in chars)
    return bool(chars) and cjk / len(chars) >= min_share and not re.search(r"[A-Za-z]", text)


def _anthology_poets(folder: Path) -> set[str]:
    """The poets of the Tang 300 and Song 100 anthologies (`作者：杜甫` headers)."""
    text = _ANSI.sub("", (folder / "tang300").read_text(encoding="utf-8") +
                     (folder / "song100").read_text(encoding="utf-8"))
    return set(re.findall(r"作者[：:]\s*([^\s（(]+)", text))


def _classical(entry: str, poets: set[str]) -> bool:
    """An entry of the mixed `chinese` file that is a classical work or a poem by an anthology poet."""
    last = entry.strip().split("\n")[-1]
    work = re.search(r"--.*?《([^》‧·・ ，,]+)", last)
    author = re.search(r"--\s*([^《\s]+)\s*《", last)
    return bool(work and work.group(1).startswith(_CLASSICAL_WORKS) or author and author.group(1) in poets)


def chinese_documents(folder: Path, version: str) -> list[dict]:
    poets = _anthology_poets(folder)
    docs = []
    for name in ("tang300", "song100", "chinese"):
        entries = (folder / name).read_text(encoding="utf-8").split("\n%\n")
        for n, raw in enumerate(entries):
            text = _clean_entry(raw)
            if name == "chinese" and not _classical(text, poets):
                continue
            if _is_chinese(text):
                docs.append({"domain": "chinese", "source": f"fortunes-zh-{version}/{name}#{n}", "text": text})
    return docs


# --- code ------------------------------------------------------------------------------------------

CODE_BUDGET_BYTES = 700_000
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "encodings",
              "pydoc_data", "ensurepip", "__pycache__", "tkinter"}


def code_documents() -> list[dict]:
    """Standard-library files of 1-30 kB, taken in the order of a hash of their path until the budget."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tag = f"cpython-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    candidates = []
    for path in stdlib.rglob("*.py"):
        rel = path.relative_to(stdlib)
        if _SKIP_DIRS & set(rel.parts[:-1]) or rel.parts[0].startswith("config-"):
            continue
        if 1_000 <= path.stat().st_size <= 30_000:
            candidates.append(rel.as_posix())
    candidates.sort(key=lambda rel: hashlib.sha256(rel.encode()).hexdigest())
    docs, total = [], 0
    for rel in candidates:
        text = (stdlib / rel).read_text(encoding="utf-8")
        if total + len(text.encode()) > CODE_BUDGET_BYTES:
            continue
        docs.append({"domain": "code", "source": f"{tag}/Lib/{rel}", "text": text.strip("\n") + "\n"})
        total += len(text.encode())
    return sorted(docs, key=lambda d: d["source"])


# --- arithmetic ------------------------------------------------------------------------------------

ARITHMETIC_SEED = 1234
ARITHMETIC_DOCS = 500
LINES_PER_DOC = 24


def arithmetic_documents() -> list[dict]:
    rng = random.Random(ARITHMETIC_SEED)
    return [{"domain": "arithmetic", "source": f"generated/seed-{ARITHMETIC_SEED}#{n}",
             "text": "\n".join(arithmetic_line(rng) for _ in range(LINES_PER_DOC))}
            for n in range(ARITHMETIC_DOCS)]


# --- assembly --------------------------------------------------------------------------------------

def build_corpus(out: Path, workdir: Path) -> dict:
    """Write corpus.jsonl into `out`; return the number of documents per domain and split."""
    folder, version = fortunes_zh_dir(workdir)
    if version != FORTUNES_ZH_VERSION:
        print(f"warning: fortunes-zh {version}, the committed corpus used {FORTUNES_ZH_VERSION}", file=sys.stderr)
    docs = english_documents() + chinese_documents(folder, version) + code_documents() + arithmetic_documents()
    seen, records, counts = set(), [], {}
    for doc in docs:
        # NFC: one spelling per character, the form transformers' Qwen2 tokenizer normalises to.
        doc["text"] = unicodedata.normalize("NFC", doc["text"])
        if doc["text"] in seen:  # exact duplicates would leak between train and validation
            continue
        seen.add(doc["text"])
        split = split_of(doc["domain"], doc["source"])
        records.append({"domain": doc["domain"], "split": split, "source": doc["source"], "text": doc["text"]})
        counts[(doc["domain"], split)] = counts.get((doc["domain"], split), 0) + 1
    for domain in ("english", "chinese", "code", "arithmetic"):
        for split in ("train", "validation"):
            if not counts.get((domain, split)):
                raise SystemExit(f"error: no {split} documents for {domain}")
    with open(out / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: data/)")
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary folder and compare with the files in --out")
    parser.add_argument("--corpus-only", action="store_true", help="skip training the tokenizer")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from build_tokenizer import TOKENIZER_OUTPUTS, build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "out" if args.check else args.out
        out.mkdir(parents=True, exist_ok=True)
        (tmp / "work").mkdir()
        counts = build_corpus(out, tmp / "work")
        for (domain, split), n in sorted(counts.items()):
            print(f"{domain:>10} {split:>10}: {n} documents")
        names = ["corpus.jsonl"]
        if not args.corpus_only:
            build_tokenizer(out / "corpus.jsonl", out)
            names += list(TOKENIZER_OUTPUTS)
        for name in names:
            print(f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}")
        if args.check:
            differ = [n for n in names if (out / n).read_bytes() != (args.out / n).read_bytes()]
            print("identical" if not differ else f"differ: {', '.join(differ)}")
            return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
