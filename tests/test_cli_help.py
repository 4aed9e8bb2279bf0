"""Every sub-command's `--help` says what each option does and its default, and
docs/cli-flags.md lists exactly the commands that accept each shared flag."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from convzoo.cli import COMMANDS
from helpers import run, subparsers

REPO = Path(__file__).resolve().parents[1]


def _shown(p: argparse.ArgumentParser):
    """The actions `--help` lists (an old spelling hidden with SUPPRESS is not shown)."""
    return [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def _takes_value(a: argparse.Action) -> bool:
    flag = isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._VersionAction))
    return not flag and a.nargs != 0


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_a_default(name, capsys):
    p = subparsers()[name]
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    undocumented, no_default = [], []  # an option required in effect may say so instead
    for a in _shown(p):
        label = "/".join(a.option_strings) or a.dest
        if not (a.help or "").strip():
            undocumented.append(label)
            continue
        optional = a.option_strings or a.nargs in ("?", "*")
        if optional and _takes_value(a) and not a.required:
            # the help line as printed: the formatter appends the default where it is a value
            line = p._get_formatter()._expand_help(a)
            if "default" not in line.lower() and "required" not in line.lower():
                no_default.append(label)
    assert not undocumented, f"convzoo {name}: options without help text: {undocumented}"
    assert not no_default, f"convzoo {name}: options whose help does not state the default: {no_default}"
    assert "usage:" in text


def test_value_defaults_are_printed():
    help_text = subparsers()["eval"].format_help()
    assert re.search(r"--batch-size BATCH_SIZE\s+images per forward pass \(default 64\)", help_text)
    assert "(default: center)" in help_text  # --crop: appended by convzoo.cli.HelpFormatter
    assert "(default: None)" not in help_text and "(default: False)" not in help_text


def _doc_rows():
    """(flags, commands) of each row of docs/cli-flags.md's table."""
    rows = []
    for line in (REPO / "docs" / "cli-flags.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`") or cells[1] == "commands":
            continue
        flags = [f.split()[0] for f in re.findall(r"`([^`]+)`", cells[0])]
        rows.append((flags, {c.strip() for c in cells[1].split(",")}))
    return rows


def _accepts(p: argparse.ArgumentParser, flag: str) -> bool:
    if flag == "MODEL":  # the first positional
        positional = [a for a in p._actions if not a.option_strings]
        return bool(positional) and (
            positional[0].dest == "model" or "MODEL" in (positional[0].metavar or "")
        )
    return any(flag in a.option_strings for a in _shown(p))


def test_cli_flags_doc_lists_exactly_the_commands_that_accept_each_flag():
    rows = _doc_rows()
    assert len(rows) >= 10 and any("--data" in f for f, _ in rows)
    parsers = subparsers()
    for flags, documented in rows:
        assert documented <= set(parsers), (
            f"docs/cli-flags.md names unknown commands: {documented - set(parsers)}"
        )
        for flag in flags:
            actual = {name for name, p in parsers.items() if _accepts(p, flag)}
            assert actual == documented, (
                f"{flag}: docs/cli-flags.md lists {sorted(documented)}, "
                f"the parsers accept it in {sorted(actual)}"
            )


def test_pack_takes_data_like_the_other_commands(tmp_path, capsys):
    p = subparsers()["pack"]
    assert p.parse_args(["--data", "synthetic", "--out", "x"]).data == "synthetic"
    assert p.parse_args(["synthetic", "--out", "x"]).source == "synthetic"  # = --data
    rc, _, err = run(capsys, "pack", "--out", tmp_path / "a")
    assert rc == 2 and "--data SPEC" in err
    rc, _, err = run(capsys, "pack", "synthetic", "--data", tmp_path, "--out", tmp_path / "b")
    assert rc == 2 and "give one" in err


def test_train_limit_is_a_deprecated_spelling_of_limit_val(capsys):
    p = subparsers()["train"]
    assert p.parse_args(["m", "--out", "o", "--limit-val", "7"]).limit_val == 7
    args = p.parse_args(["m", "--out", "o", "--limit", "5"])
    assert args.limit_val == 5
    err = capsys.readouterr().err
    assert "--limit is deprecated; use --limit-val" in err
    assert "--limit " not in p.format_help().replace("--limit-", "")  # hidden from --help
