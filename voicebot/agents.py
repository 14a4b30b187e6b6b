"""`voicebot agents add|list|remove`: the agent console's accounts, managed from the shell
(the store itself is voicebot.accounts): in data_dir/agents.db, or with `queue_backend: redis`
in the Redis every gateway shares, so an agent added once logs in on any gateway."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from voicebot.account_backends import open_account_store
from voicebot.accounts import AccountStore, AgentError, normalise_name

if TYPE_CHECKING:
    from voicebot.config import Settings


def _open(args: argparse.Namespace) -> tuple[Settings, AccountStore]:
    from voicebot.config import load_settings

    settings = load_settings(getattr(args, "config", None))
    return settings, open_account_store(settings)


def parse_forvaltninger(text: str, known: list[str]) -> list[str]:
    ids = [f.strip().upper() for f in text.split(",") if f.strip()]
    unknown = [f for f in ids if f not in known]
    if unknown:
        raise AgentError(
            f"unknown forvaltning {', '.join(unknown)} (the catalogue has: {', '.join(known)})"
        )
    return ids


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise AgentError("the passwords differ")
    return first


def cmd_agents_add(args: argparse.Namespace) -> int:
    from voicebot.catalogue import load_catalogue

    settings, store = _open(args)
    try:
        forvaltninger = parse_forvaltninger(
            args.forvaltning or "", list(load_catalogue(settings.catalogue).forvaltninger)
        )
        if not forvaltninger and not args.admin:
            raise AgentError("give --forvaltning KFF[,TMF] (or --admin)")
        agent = store.add(args.name, _read_password(args.password_stdin), forvaltninger, args.admin)
    except AgentError as exc:
        print(f"voicebot agents add: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(
        f"added {agent.name}: {', '.join(agent.forvaltninger) or '-'}{' (admin)' if agent.admin else ''}"
    )
    return 0


def cmd_agents_list(args: argparse.Namespace) -> int:
    _, store = _open(args)
    agents = store.agents()
    store.close()
    if args.json:
        print(
            json.dumps(
                [
                    {"name": a.name, "forvaltninger": list(a.forvaltninger), "admin": a.admin}
                    for a in agents
                ],
                ensure_ascii=False,
            )
        )
        return 0
    if not agents:
        print("no agents (add one with: voicebot agents add NAME --forvaltning KFF)")
    for a in agents:
        print(f"{a.name:24s} {','.join(a.forvaltninger) or '-':24s} {'admin' if a.admin else ''}")
    return 0


def cmd_agents_remove(args: argparse.Namespace) -> int:
    _, store = _open(args)
    removed = store.remove(args.name)
    store.close()
    print(
        f"removed {normalise_name(args.name)} and its sessions"
        if removed
        else f"no agent named {args.name}"
    )
    return 0 if removed else 1


def _reporting(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An account store that cannot be opened (Redis not answering) is a message, not a trace."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AgentError as exc:
            print(f"voicebot agents: {exc}", file=sys.stderr)
            return 1

    return run


def add_agent_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `voicebot agents add|list|remove` on the CLI's subparsers."""
    p = subparsers.add_parser("agents", help="agent console accounts")
    sub = p.add_subparsers(dest="agents_command", required=True)

    s = sub.add_parser("add", help="add an agent (asks for the password)")
    s.add_argument("name")
    s.add_argument("--forvaltning", help="the queues the agent takes, e.g. KFF or KFF,TMF")
    s.add_argument("--admin", action="store_true", help="sees and takes every queue")
    s.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    s.set_defaults(func=_reporting(cmd_agents_add))

    s = sub.add_parser("list", help="list agents and their forvaltninger")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_reporting(cmd_agents_list))

    s = sub.add_parser("remove", help="remove an agent and end its sessions")
    s.add_argument("name")
    s.set_defaults(func=_reporting(cmd_agents_remove))
