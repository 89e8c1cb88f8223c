"""The README and docs/ stay true to the command line and to the repository.

- every ``qtrust <command> ...`` the docs write (in code blocks and inline code) is a command of
  ``qtrust --help``, and every ``--option`` given to it is one of that command's options;
- every command ``qtrust --help`` lists (and every subcommand of its groups) is documented;
- every relative link points to a file that exists (and to a heading of it, for ``#anchors``);
- every repository path written in backticks (``jobs/spec/schema.py``, ``cluster/engines/``) or
  used in a shell block (``bench/throughput.py``) exists, and every dotted module path
  (``trust.metrics.docs``) names a module of the repository.

Each failure names the file, the line and what to fix. If a doc names something the CLI lacks, fix
the doc.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from jobs.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Top-level folders whose paths the docs write relative to the repository root.
REPO_ROOTS = ("jobs", "cluster", "trust", "tests", "bench", "examples", "infra", "docs", ".ci")


# ---------------------------------------------------------------------------------------------
# Reading the docs: code blocks, inline code, links, each with its line number.


@dataclass(frozen=True)
class Snippet:
    doc: Path
    line: int
    text: str
    block: bool  # a line of a fenced code block (else an inline code span of prose)
    comment: str = ""  # a code line's ``# comment`` (it may name options of the line's command)

    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose_and_blocks(doc: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line number, text) of prose lines and of code-block lines; continued shell lines joined."""
    prose: list[tuple[int, str]] = []
    block: list[tuple[int, str]] = []
    in_block = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE.match(line):
            in_block = not in_block
            pending = None
            continue
        if not in_block:
            prose.append((number, line))
            continue
        if pending is not None:
            start, text = pending
            line = text + " " + line.strip()
            number = start
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        pending = None
        block.append((number, line))
    return prose, block


def _split_comment(line: str) -> tuple[str, str]:
    """A code line and its ``# comment`` (a ``#`` at the start or after a space)."""
    match = re.search(r"(^|\s)#", line)
    return (line[: match.start()], line[match.start() :]) if match else (line, "")


def snippets() -> list[Snippet]:
    found = []
    for doc in DOCS:
        prose, block = _prose_and_blocks(doc)
        for number, line in block:
            code, comment = _split_comment(line)
            found.append(Snippet(doc, number, code, True, comment))
        for number, line in prose:
            for match in _INLINE.finditer(line):
                found.append(Snippet(doc, number, match.group(2).strip(), False))
    return found


def links() -> list[tuple[Path, int, str]]:
    found = []
    for doc in DOCS:
        prose, _ = _prose_and_blocks(doc)
        for number, line in prose:
            without_code = _INLINE.sub("", line)
            for match in _LINK.finditer(without_code):
                found.append((doc, number, match.group(1)))
    return found


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    prose, _ = _prose_and_blocks(doc)
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


# ---------------------------------------------------------------------------------------------
# The command line, as `qtrust --help` shows it.


# Typer builds click-style commands (its own vendored click): a group has ``commands``, an option
# has ``param_type_name == "option"`` and its names in ``opts`` / ``secondary_opts``.
Command = Any


def _is_group(command: Command) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _cli() -> Command:
    command = typer.main.get_command(app)
    assert _is_group(command)
    return command


def _options(command: Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def cli_commands() -> dict[str, Command]:
    """Every command path (``run``, ``benchmarks show``, ...) and groups themselves."""
    root = _cli()
    found: dict[str, Command] = {}
    for name, command in root.commands.items():
        found[name] = command
        if _is_group(command):
            for sub_name, sub in command.commands.items():
                found[f"{name} {sub_name}"] = sub
    return found


@dataclass(frozen=True)
class Invocation:
    snippet: Snippet
    words: list[str]  # the command path as written, e.g. ["benchmarks", "show"]; alternatives split later
    options: list[str]


#: ``qtrust`` as the command word: at the start (after ``VAR=value`` settings), after a path
#: (``.venv/bin/qtrust``) or after ``--`` (``ray job submit ... -- qtrust run``); never an argument
#: (``kubectl -n qtrust create ...``).
_QTRUST = re.compile(r"(?:^\s*(?:[A-Z_]+=\S*\s+)*(?:\S*/)?|\s--\s+)qtrust\s+(?P<rest>\S.*)$")


def invocations() -> list[Invocation]:
    found = []
    for snippet in snippets():
        text = snippet.text
        for segment in re.split(r"\s(?:&&|\|\||\||;)\s|;\s", text):
            for match in _QTRUST.finditer(segment.strip()):
                rest = match.group("rest")
                # Shell blocks: the invocation ends at a redirection or a closing parenthesis of prose.
                rest = re.split(r"\s[<>]|\s2>|\)\s", rest)[0]
                tokens = rest.split()
                words = []
                for token in tokens:
                    if token.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", token):
                        break
                    words.append(token)
                    if len(words) == 2:
                        break
                options = _OPTION.findall(rest + " " + snippet.comment)
                found.append(Invocation(snippet, words, options))
    return found


_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: Inline code that names another program: options written after it in a paragraph are not qtrust's.
_OTHER_PROGRAM = re.compile(r"(\.py\b|^(python|pytest|pip|ray|kubectl|docker|make|mlflow)\b)")


def _paragraphs(doc: Path) -> list[list[tuple[int, str]]]:
    """Prose paragraphs (and list items) of a doc, as (line number, text) lines."""
    prose, _ = _prose_and_blocks(doc)
    paragraphs: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    last = 0
    for number, line in prose:
        starts_item = re.match(r"^\s*([-*+]|\d+\.|\*\*\d+\.)\s", line) is not None
        if not line.strip() or starts_item or number != last + 1 or line.startswith("#"):
            if current:
                paragraphs.append(current)
            current = []
        if line.strip():
            current.append((number, line))
        last = number
    if current:
        paragraphs.append(current)
    return paragraphs


def prose_options() -> list[tuple[Snippet, str, list[str] | None]]:
    """Options written on their own in inline code (`` `--limit N` ``), with the command they belong to.

    The command is the last one the paragraph named before them (`` `qtrust report ...` `` or
    "Options of `run`"); None when it named none; options after another program's name
    (`` `bench/scale_sim.py` ``) are that program's and are left out.
    """
    found: list[tuple[Snippet, str, list[str] | None]] = []
    for doc in DOCS:
        for paragraph in _paragraphs(doc):
            context: list[str] | None = None
            for number, line in paragraph:
                for match in re.finditer(r"Options of (`+)(.+?)\1|(`+)(.+?)\3", line):
                    if match.group(2):
                        context = match.group(2).split()
                        continue
                    span = match.group(4).strip()
                    if _QTRUST.search(span):
                        context = [w for w in _QTRUST.search(span).group("rest").split() if not w.startswith("-")][:2]
                    elif _OTHER_PROGRAM.search(span):
                        context = ["<other>"]
                    elif span.startswith("--"):
                        option = _OPTION.match(span)
                        if option and context != ["<other>"]:
                            found.append((Snippet(doc, number, span, False), option.group(0), context))
    return found


def _resolve(words: list[str], commands: dict[str, Command]) -> list[tuple[str, Command | None]]:
    """The command path(s) an invocation names (``run|resume`` is two), None for an unknown one."""
    if not words:
        return [("", _cli())]
    resolved = []
    for first in words[0].split("|"):
        command = commands.get(first)
        if _is_group(command) and len(words) > 1:
            for second in words[1].split("|"):
                resolved.append((f"{first} {second}", commands.get(f"{first} {second}")))
        else:
            resolved.append((first, command))
    return resolved


# ---------------------------------------------------------------------------------------------
# The tests.


def _report(problems: list[str]) -> None:
    if problems:
        pytest.fail("docs out of date:\n  " + "\n  ".join(problems), pytrace=False)


def _help(*words: str) -> str:
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_the_commands_checked_here() -> None:
    """The command tree the checks below read is what `qtrust --help` (and each command's) shows."""
    top = _help()
    for name in _cli().commands:
        assert re.search(rf"\b{re.escape(name)}\b", top), f"`qtrust --help` does not list {name}"
    for path, command in cli_commands().items():
        text = _help(*path.split())
        if " " in path:
            group, sub = path.split()
            assert re.search(rf"\b{re.escape(sub)}\b", _help(group)), f"`qtrust {group} --help` does not list {sub}"
        for option in _options(command):
            assert option in text, f"`qtrust {path} --help` does not show {option}"


def test_docs_find_qtrust_invocations() -> None:
    """The scanner itself works: the README's own commands are found."""
    found = {(inv.snippet.doc.name, " ".join(inv.words)) for inv in invocations()}
    assert ("README.md", "run") in found
    assert ("sweeps.md", "benchmarks list") in found


def test_documented_commands_and_options_exist() -> None:
    commands = cli_commands()
    problems = []
    for inv in invocations():
        for path, command in _resolve(inv.words, commands):
            if command is None:
                known = ", ".join(sorted(commands))
                problems.append(
                    f"{inv.snippet.where()}: `qtrust {path}` is not a command of `qtrust --help` "
                    f"(commands: {known}); fix the doc"
                )
                continue
            allowed = _options(command)
            for option in inv.options:
                if option not in allowed:
                    problems.append(
                        f"{inv.snippet.where()}: `qtrust {path}` has no option {option} "
                        f"(its options: {', '.join(sorted(allowed))}); fix the doc"
                    )
    _report(problems)


def test_options_named_in_prose_exist() -> None:
    """`` `--limit N` `` after "Options of `run`" is an option of run; without a command, of some command."""
    commands = cli_commands()
    every = set().union(*(_options(c) for c in commands.values()))
    problems = []
    in_blocks = {doc: set(_OPTION.findall("\n".join(line for _, line in _prose_and_blocks(doc)[1]))) for doc in DOCS}
    for snippet, option, context in prose_options():
        if context is None:
            # Not tied to a command: an option of some qtrust command, or of a command a code block
            # of the same doc shows (`--same-prompt` after `bench/vs_harness.py ... --same-prompt`).
            if option not in every and option not in in_blocks[snippet.doc]:
                problems.append(f"{snippet.where()}: {option} is an option of no qtrust command; fix the doc")
            continue
        resolved = _resolve([w for w in context if re.fullmatch(r"[a-z][a-z|-]*", w)], commands)
        allowed = set().union(*(_options(c) for _, c in resolved if c is not None))
        if option not in allowed:
            names = " / ".join(f"qtrust {p}" for p, _ in resolved)
            problems.append(
                f"{snippet.where()}: {option} is written for `{names}`, which has no such option "
                f"(its options: {', '.join(sorted(allowed))}); fix the doc"
            )
    _report(problems)


def test_every_command_is_documented() -> None:
    documented = set()
    commands = cli_commands()
    for inv in invocations():
        for path, command in _resolve(inv.words, commands):
            if command is not None and path:
                documented.add(path)
                documented.add(path.split()[0])
    missing = [
        f"`qtrust {path}` (listed by `qtrust --help`) appears in no doc: add it to docs/sweeps.md's command list"
        for path, command in sorted(commands.items())
        if path not in documented
    ]
    _report(missing)


def test_relative_links_point_to_existing_files() -> None:
    problems = []
    for doc, number, target in links():
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{doc.relative_to(REPO)}:{number}"
        linked = (doc.parent / path_part).resolve() if path_part else doc
        if not linked.exists():
            problems.append(
                f"{where}: link target {target} does not exist (relative to {doc.parent.relative_to(REPO) or '.'}/); fix the link"
            )
            continue
        if anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            problems.append(
                f"{where}: {linked.relative_to(REPO)} has no heading for #{anchor} "
                f"(anchors: {', '.join(sorted(_anchors(linked)))}); fix the link"
            )
    _report(problems)


_PATH = re.compile(r"(?<![\w./~-])((?:" + "|".join(re.escape(r) for r in REPO_ROOTS) + r")/[\w./*=<>{}-]*)")
_MODULE = re.compile(r"^(jobs|cluster|trust)(\.[A-Za-z_]\w*)+$")


def _check_path(text: str) -> str | None:
    """None when a repository path exists, else what is wrong."""
    cut = re.split(r"[<{]", text)[0]  # a placeholder: check the part before it
    if cut != text:
        cut = cut.rsplit("/", 1)[0] + "/" if "/" in cut else cut
    cut = cut.rstrip(".,:;")
    if "*" in cut:
        return None if list(REPO.glob(cut)) else f"`{text}` matches no file of the repository"
    if not (REPO / cut).exists():
        return f"`{text}` does not exist in the repository"
    if cut.endswith("/") and not (REPO / cut).is_dir():
        return f"`{text}` is not a folder"
    return None


def _check_module(dotted: str) -> str | None:
    """``trust.metrics.docs`` or ``trust.benchmarks.label_metrics.item_values``: a module, maybe an attribute."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:end])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not module.is_file():
            continue
        rest = parts[end:]
        if not rest:
            return None
        if len(rest) == 1 and re.search(
            rf"^\s*(def |class |async def )?{re.escape(rest[0])}\b", module.read_text(encoding="utf-8"), re.M
        ):
            return None
        return f"`{dotted}`: {module.relative_to(REPO)} defines no {'.'.join(rest)}"
    return f"`{dotted}` is not a module of the repository"


def test_repository_paths_exist() -> None:
    problems = []
    for snippet in snippets():
        if not snippet.block and _MODULE.match(snippet.text):
            problem = _check_module(snippet.text)
            if problem:
                problems.append(f"{snippet.where()}: {problem}; fix the doc")
            continue
        for match in _PATH.finditer(snippet.text):
            problem = _check_path(match.group(1))
            if problem:
                problems.append(f"{snippet.where()}: {problem}; fix the path in the doc")
    _report(problems)


def test_the_real_qtrust_help_prints_text_only(tmp_path: Path) -> None:
    """The installed command's help, through its redacting stdout: click writes bytes there, which
    once came out as ``b''b'\\n'`` after the help text."""
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "jobs", "data", "fetch", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Download benchmark files" in shown and "b'" not in shown, shown[-200:]
