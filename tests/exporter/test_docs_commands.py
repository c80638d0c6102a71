"""Every ``llmledger …`` command the docs show exists, with the flags they give it.

Commands are taken from fenced code blocks and inline code spans of every Markdown file in
the repository, and checked against the CLI's real argument parser (the one ``llmledger``
runs), so a renamed flag cannot leave a doc behind.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmledger.exporter.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_NOT_SHELL = {"python", "sql", "toml", "json", "yaml", "xml"}
_INLINE = re.compile(r"`([^`\n]+)`")
# `llmledger` as a command: first on the line, after a prompt, environment assignments or
# `docker compose exec SERVICE` (prose and diagrams that mention llmledger are not commands).
_COMMAND = re.compile(
    r"^\s*(?:\$\s+)?(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:docker\s+compose\s+exec\s+(?:-\S+\s+)*\S+\s+)?"
    r"llmledger(?=\s|$)(.*)$"
)
# A table of subcommands may leave out the `llmledger` in front (`report [--by DIMS]`).
_BARE = re.compile(r"^(collector|demo|report|budget|schema|sql|prices|tenant-user)\s+\S")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


@dataclass(frozen=True)
class DocCommand:
    where: str
    text: str
    words: list[str]  # what follows `llmledger`, up to a comment


def _markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


def _commands_in(text: str, where: str, *, bare: bool = False) -> list[DocCommand]:
    if bare and _BARE.match(text):
        text = f"llmledger {text}"
    match = _COMMAND.match(text)
    if match is None:
        return []
    rest = match.group(1).split(" #", 1)[0]
    # Table cells escape the pipe of alternatives (`--format table\|csv`).
    words = rest.replace("\\|", "|").split()
    return [DocCommand(where, f"llmledger{rest}", words)]


def documented_commands() -> list[DocCommand]:
    commands: list[DocCommand] = []
    for path in _markdown_files():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        for language, block in _FENCE.findall(text):
            if language.strip() in _NOT_SHELL:
                continue
            joined = block.replace("\\\n", " ")  # shell line continuations
            for line in joined.splitlines():
                commands += _commands_in(line, f"{name} (code block)")
        for span in _INLINE.findall(_FENCE.sub("", text)):
            commands += _commands_in(span, name, bare=True)
    return commands


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # pyright: ignore[reportPrivateUsage]
        if isinstance(action, argparse._SubParsersAction):  # pyright: ignore[reportPrivateUsage]
            return dict(action.choices)  # pyright: ignore[reportUnknownArgumentType]
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}  # pyright: ignore[reportPrivateUsage]


def problems(command: DocCommand) -> list[str]:
    """What in a documented command the CLI does not have."""
    parser = build_parser()
    words = list(command.words)
    path = ["llmledger"]
    # Walk the subcommands the words name; a group named alone (`llmledger budget`) is fine.
    while words and not words[0].startswith("-"):
        choices = _subparsers(parser)
        if not choices:
            break
        word = words[0].strip("`,.;:)")
        if word.isupper():  # a placeholder (`llmledger COMMAND --help`) stands for any command
            return []
        if word not in choices:
            if len(path) == 1:
                return [f"no command `llmledger {word}`"]
            # Prose after a group (`llmledger budget` or `schema apply|status`) names subcommands as alternatives.
            alternatives = [w for w in re.split(r"[|/]", word) if w]
            missing = [w for w in alternatives if w not in choices]
            return [f"no subcommand `{' '.join(path)} {w}`" for w in missing]
        path.append(word)
        parser = choices[word]
        words.pop(0)
    known = _flags(parser)
    return [
        f"`{' '.join(path)}` has no flag {flag}"
        for flag in _FLAG.findall(" ".join(words))
        if flag not in known
    ]


DOCUMENTED = documented_commands()


def test_the_docs_show_commands() -> None:
    # The extraction works: the README's and docs' commands are found (a broken pattern finds none).
    texts = {c.text.split()[1] for c in DOCUMENTED if len(c.words) > 0}
    assert {"collector", "demo", "report", "sql", "schema", "prices", "budget", "tenant-user"} <= texts
    assert len(DOCUMENTED) > 50


@pytest.mark.parametrize("command", DOCUMENTED, ids=[f"{c.where}: {c.text}"[:120] for c in DOCUMENTED])
def test_documented_command_exists_with_its_flags(command: DocCommand) -> None:
    assert problems(command) == [], f"{command.where}: {command.text}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llmledger demo --store DIR", ["`llmledger demo` has no flag --store"]),
        ("llmledger demo --dir DIR", []),
        ("llmledger schema apply --target 3", []),
        ("llmledger schema upgrade", ["no subcommand `llmledger schema upgrade`"]),
        ("llmledger schema apply|status", []),
        ("llmledger reports --by tenant", ["no command `llmledger reports`"]),
        ("LLMLEDGER_CLICKHOUSE_URL=chdb:///x llmledger report --by tenant --formats csv", ["`llmledger report` has no flag --formats"]),
        ("docker compose exec collector llmledger budget list", []),
        ("demo [--store DIR]", ["`llmledger demo` has no flag --store"]),
        ("sql QUERY [--format table\\|csv\\|json]", []),
        ("prices sync|show|validate", []),
    ],
)  # fmt: skip
def test_the_check_catches_what_it_should(text: str, expected: list[str]) -> None:
    (command,) = _commands_in(text, "example", bare=True)
    assert problems(command) == expected


@pytest.mark.parametrize(
    "text",
    [
        "your app ──► llmledger instrumentation ──► OTLP ──► llmledger collector",
        "llmledger: the embedded llmledger store at /x is in use",
        "OTEL_TRACES_EXPORTER=llmledger opentelemetry-instrument python app.py",
        "collector",
    ],
)
def test_prose_and_diagrams_are_not_commands(text: str) -> None:
    assert _commands_in(text, "example", bare=True) == []


def test_collector_settings_table_matches_the_collectors_flags() -> None:
    """docs/collector.md documents every flag `llmledger collector` has, and its settings table no other."""
    collector = _subparsers(build_parser())["collector"]
    flags = _flags(collector) - {"-h", "--help"}
    text = (ROOT / "docs" / "collector.md").read_text()
    table = {
        cells[2].strip("` ")
        for line in text.splitlines()
        if line.startswith("| `") and len(cells := line.split("|")) > 3 and cells[2].strip().startswith("`--")
    }
    assert table, "the settings table was not found"
    assert table - flags == set(), "documented flags the collector does not have"
    # A boolean's `--no-…` form is covered by the doc's rule for booleans (`--apply-schema` / `--no-apply-schema`).
    positive = {flag.replace("--no-", "--", 1) for flag in flags}
    undocumented = {flag for flag in positive if f"`{flag}`" not in text}
    assert undocumented == set(), "collector flags docs/collector.md does not mention"
