"""The README's own lines, for the tests that run them as written: the fresh
machine (test_fresh_machine.py), the host recipe (test_readme.py), the
command-line block (test_cli.py)."""
import os
import re

from helpers import REPO

README = os.path.join(REPO, "README.md")


def section(title):
    """The text of the README section whose heading is exactly `title` (any level)."""
    text = open(README, encoding="utf-8").read()
    m = re.search(r"^(#+) " + re.escape(title) + r"\n", text, re.M)
    assert m, f"README.md has no section \"{title}\""
    rest = text[m.end():]
    nxt = re.search(r"^#{1,%d} " % len(m.group(1)), rest, re.M)
    return rest[:nxt.start()] if nxt else rest


def code_blocks(title):
    """The fenced code blocks of a section, each as its text."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", section(title), re.S | re.M)


def shell_lines(block):
    """A sh block as commands: comments dropped, continuation lines joined."""
    out, cur = [], ""
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if line.endswith("\\"):
            cur += line[:-1].rstrip() + " "
            continue
        out.append((cur + line.strip()).strip())
        cur = ""
    if cur:
        out.append(cur.strip())
    return out
