"""Docs that cannot drift: every link between the project's Markdown files reaches a file and a
heading that exist, and every place that sends the reader to a section by name (`see "Memory"`,
`README, "Rolling out a fleet"`: in docs, comments, defaults, code) names a heading some
README or doc has. (The bridge's metrics are held to its README by bridge/tests/test_docs.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tracked() -> list[Path]:
    """The checkout's own files (git's view: no caches, venvs or build outputs)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in names.decode().split("\0") if name and (ROOT / name).is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [m.group(1).strip() for m in re.finditer(r"(?m)^#+\s+(.+)$", text)]


def anchors(path: Path) -> set[str]:
    out, seen = set(), {}
    for heading in headings(path):
        s = slug(heading)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


MARKDOWN = [p for p in tracked() if p.suffix == ".md"]


def test_every_markdown_link_reaches_a_file_and_a_heading():
    broken = []
    for md in MARKDOWN:
        text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            dest = (md.parent / path) if path else md
            if not dest.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}: no such file")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target}: no such heading")
    assert not broken, "\n".join(broken)


REFERENCE = re.compile(r"""(?:README(?:'s|\.md)?,?\s+(?:section\s+)?|[Ss]ee\s+)"([A-Z][^"\n]{2,80})\"""")


def test_every_section_named_in_prose_or_code_exists():
    """A heading matches when it is the name or starts with it (`"Memory"` is `### Memory: a budget ...`)."""
    known = [heading.replace("`", "") for md in MARKDOWN for heading in headings(md)]
    # A named paragraph: a list item that leads with its name in bold (`- **A poison batch** (...)`).
    known += [m.replace("`", "") for md in MARKDOWN
              for m in re.findall(r"(?m)^\s*- \*\*([^*\n]+)\*\*", md.read_text(encoding="utf-8"))]
    stale = []
    for path in tracked():
        if path.suffix in (".png", ".gz", ".whl", ".deb", ".so") or "tests/docs" in str(path):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for name in REFERENCE.findall(text):
            if not any(h == name or h.startswith(name + ":") or h.startswith(name + " (") for h in known):
                stale.append(f"{path.relative_to(ROOT)}: \"{name}\"")
    assert not stale, "sections named that no README or doc has:\n" + "\n".join(stale)
