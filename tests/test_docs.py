"""The documentation stays true to the code: every `convzoo ...` command shown in a code block of
README.md or docs/*.md parses with the current command line, and every relative link points to a
file that exists (and to a heading of it, for `page.md#anchor` links). The facts the pages state
about the code are the code's: the number of architectures and README's `convzoo list` table, the
catalog's size, the data KINDs, the documentation index, and DESIGN.md's layout of the modules.

Commands are taken from fenced code blocks: lines starting with `$ convzoo` or `convzoo` (also
`python -m convzoo` and torchrun's `... -m convzoo ...`), with `\\` continuations joined, a trailing
`# comment` or `| pipe` dropped. Lines with a word that shows a pattern rather than a value (`...`,
`[--opt]`, `<x>`, `a|b`, `$VARIABLE`, an ALL-CAPS placeholder such as MODEL or FILE) are left out.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from convzoo.cli import build_parser
from helpers import subparsers

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# a word that stands for something: ..., [--optional], <x>, a|b, $VARIABLE, MODEL / N / FILE
_PLACEHOLDER = re.compile(r"\.\.\.|…|^\[|^<|\||\$|^[A-Z][A-Z0-9_]*$")
_START = re.compile(
    r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(?:python3? -m |\S*torch\.distributed\.run .*?-m )?convzoo( |$)"
)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(text: str):
    """Each fenced code block as a list of (line number, line), `\\` continuations joined."""
    block, pending, start = None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if block is not None:
                yield block
            block, pending = (None if block is not None else []), ""
            continue
        if block is None:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        block.append((start, (pending + line).strip()))
        pending = ""


def _code_lines(text: str):
    """(line number, line) of the command lines of every code block: in a block that shows a
    session (`$ ` prompts), only the prompted lines; the rest is output such as
    `convzoo train: error: ...`."""
    for block in _blocks(text):
        session = any(line.startswith("$ ") for _, line in block)
        yield from ((n, line) for n, line in block if line.startswith("$ ") or not session)


def _command(line: str) -> str | None:
    """The argv string after `convzoo` if the line runs convzoo, else None."""
    m = _START.match(line)
    if not m:
        return None
    rest = line[m.end() :]
    if rest.split(" ", 1)[0].endswith(":"):  # a message: `convzoo train: error: ...`
        return None
    return re.split(r"\s\|\s", rest)[0]  # `convzoo summary ... | grep warning`


def _commands():
    found = []
    for path in DOCS:
        for number, line in _code_lines(path.read_text(encoding="utf-8")):
            rest = _command(line)
            if rest is not None and not any(_PLACEHOLDER.search(w) for w in shlex.split(rest, comments=True)):
                found.append(pytest.param(rest, id=f"{path.relative_to(REPO)}:{number}"))
    return found


COMMANDS = _commands()


def test_the_docs_show_commands():
    """The extraction finds the tour's commands (a broken pattern would silently check nothing)."""
    shown = {shlex.split(c, comments=True)[0] for c in (p.values[0] for p in COMMANDS)}
    assert {
        "list",
        "summary",
        "train",
        "eval",
        "predict",
        "convert",
        "export",
        "pack",
        "bench",
        "weights",
        "serve",
    } <= shown


@pytest.mark.parametrize("argv", COMMANDS)
def test_documented_command_parses(argv, capsys):
    args = shlex.split(argv, comments=True)
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        err = capsys.readouterr().err.strip()
        pytest.fail(f"`convzoo {argv}` does not parse (exit {e.code}): {err}")


def _links():
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in _LINK.finditer(text):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http(s)://, mailto:
            line = text.count("\n", 0, m.start()) + 1
            found.append(pytest.param(path, target, id=f"{path.relative_to(REPO)}:{line}:{target}"))
    return found


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page, target", _links())
def test_relative_link_exists(page, target):
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
    assert REPO in file.parents or file == REPO, f"{target} points outside the repository"
    if anchor and file.suffix == ".md":
        assert anchor in _anchors(file), f"{page.relative_to(REPO)} links to {target}: no such heading"


# ---- facts the pages state about the code ---------------------------------------------------------
def _read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under a `## heading` up to the next heading of that level."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_counts_and_lists_the_registered_architectures():
    from convzoo import list_models

    readme = _read("README.md")
    stated = re.findall(r"\b(\d+) architectures\b", readme)
    assert stated and {int(n) for n in stated} == {len(list_models())}, stated
    table = readme[readme.index("$ convzoo list\n") : readme.index("```", readme.index("$ convzoo list\n"))]
    rows = [line.split()[0] for line in table.splitlines()[2:] if line.strip()]
    assert rows == list_models(), "README's `convzoo list` table is not the registry's list"


def test_weights_page_counts_the_catalog():
    from convzoo.hub import catalog

    stated = re.findall(r"\b(\d+) entries\b", _read("docs/weights.md"))
    assert stated and {int(n) for n in stated} == {len(catalog.entries())}, stated


def test_readme_documentation_index_lists_every_page():
    index = _section(_read("README.md"), "Documentation")
    listed = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", index))
    assert listed == {p.name for p in (REPO / "docs").glob("*.md")}


def test_data_kinds_are_listed_as_the_parser_has_them():
    """Every "KIND one of ..." sentence names exactly the parser's kinds, in its order."""
    from convzoo.data.spec import KINDS

    found = 0
    for path in DOCS:
        text = " ".join(path.read_text(encoding="utf-8").split())  # sentences across line breaks
        for m in re.finditer(r"KIND one of ((?:`[\w-]+`,? (?:or |and )?)+)", text):
            assert tuple(re.findall(r"`([\w-]+)`", m.group(1))) == KINDS, f"{path.name}: {m.group(0)}"
            found += 1
    assert found >= 2  # README's install section and DESIGN's data SPEC


def test_design_layout_names_every_module():
    """docs/DESIGN.md's layout names each module file (`name.py`); a command module, or an
    interop converter, by its name in its folder's line."""
    design = _read("docs/DESIGN.md")
    layout = design[design.index("## Layout") : design.index("Dependency direction")]
    by_name = ("commands", "interop")
    missing = []
    for path in sorted((REPO / "src" / "convzoo").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        named = f"{path.name}" in layout
        if not named and path.parent.name in by_name:
            named = re.search(rf"\b{path.stem}\b", layout) is not None
        if not named:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"not in docs/DESIGN.md's layout: {missing}"


def test_design_command_line_lists_each_flags_choices():
    """In DESIGN.md's command-line contract, a flag shown with its values (`--crop center|ten|dense`)
    lists exactly the values the command's parser accepts."""
    design = _read("docs/DESIGN.md")
    start = design.index("## The command line")
    block = design[design.index("```\n", start) + 4 : design.index("```", design.index("```\n", start) + 4)]
    commands, checked = subparsers(), 0
    command = None
    for line in block.splitlines():
        if line.startswith("convzoo "):
            command = commands[line.split()[1]]
        assert command is not None, line
        for flag, values in re.findall(r"(--[\w-]+) ([\w-]+(?:\|[\w-]+)+)", line):
            action = next(a for a in command._actions if flag in a.option_strings)
            if action.choices is not None:
                assert set(values.split("|")) == set(action.choices), f"{line.strip()}: {flag}"
                checked += 1
    assert checked >= 8  # train's and eval's precision, eval's crop and backend, convert's --from, ...
