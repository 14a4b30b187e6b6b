"""The `voicebot` command: the runtime CLI imports no tool package, the tools' commands come
in through entry points, and `serve` leaves provisioning to `voicebot provision`."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import voicebot.cli as cli
from voicebot.config import PROJECT_ROOT

TOOL_PACKAGES = ("models", "benchmarks")
TOOL_COMMANDS = {"train-intents", "make-training-data", "eval-asr", "eval-intents", "bench"}
RUNTIME_COMMANDS = {
    "serve",
    "call",
    "transcribe",
    "classify",
    "queues",
    "forget",
    "agents",
    "provision",
    "reload",
}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports, at any depth (function-level imports included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
    return found


def test_the_runtime_cli_imports_no_tool_package():
    path = Path(cli.__file__)
    upward = [
        f"{path.name}:{line} imports {module}"
        for module, line in imported_modules(path)
        if module.split(".")[0] in TOOL_PACKAGES
    ]
    assert not upward, upward


def test_tool_commands_are_registered_as_entry_points_and_listed_in_help():
    from importlib.metadata import entry_points

    registered = {e.name: e.value for e in entry_points(group=cli.TOOL_COMMANDS)}
    assert set(registered) >= TOOL_COMMANDS, registered
    assert all(registered[name].split(".")[0] in TOOL_PACKAGES for name in TOOL_COMMANDS)
    shown = subprocess.run(
        [sys.executable, "-m", "voicebot", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in TOOL_COMMANDS | RUNTIME_COMMANDS:
        assert f"\n    {command} " in shown, command


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    add: object

    def load(self) -> object:
        if isinstance(self.add, Exception):
            raise self.add
        return self.add


def _add_hello(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("hello").set_defaults(func=lambda args: 7)


def test_a_tool_command_comes_from_its_entry_point_and_a_broken_one_is_left_out(monkeypatch):
    entries = [
        FakeEntryPoint("hello", "tool.cli:add_hello", _add_hello),
        FakeEntryPoint("broken", "gone.cli:add", ImportError("No module named 'gone'")),
    ]
    monkeypatch.setattr(
        cli, "entry_points", lambda group: entries if group == cli.TOOL_COMMANDS else []
    )
    parser = cli.build_parser()
    assert parser.parse_args(["hello"]).func(None) == 7
    assert parser.parse_args(["queues"]).func is cli.cmd_queues  # the runtime still works
    with pytest.raises(SystemExit):  # no tool registered it here, so there is no such command
        parser.parse_args(["train-intents"])


def test_serve_does_not_provision_and_names_the_command_that_does(tmp_path, monkeypatch, capsys):
    import voicebot.app

    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VOICEBOT_ASR__MODEL_DIR", raising=False)
    monkeypatch.delenv("VOICEBOT_CONFIG", raising=False)

    def no_app(settings: object) -> None:
        raise AssertionError("serve started the app without Whisper weights")

    monkeypatch.setattr(voicebot.app, "create_app", no_app)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "voicebot provision" in err and "./setup.sh" in err and str(tmp_path) in err
    assert not (tmp_path / "models").exists()  # nothing assembled
