"""The `voicebot` command. Interfaces are stable: scripts and benchmarks depend on them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from telephony.base import SAMPLE_RATE
from telephony.registry import PLATFORM_CLIENTS
from voicebot.agents import add_agent_commands
from voicebot.catalogue import CatalogueError
from voicebot.config import ConfigError, Settings, load_settings

log = logging.getLogger("voicebot")
# Entry-point group under which tool packages register `voicebot` subcommands: each entry is a
# function that takes the subparsers and adds its command (see pyproject.toml).
TOOL_COMMANDS = "voicebot.commands"


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


def _print_json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


# -- serve ---------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from voicebot import server
    from voicebot.app import create_app
    from voicebot.asr import ModelMissing, check_model_dir

    settings = _settings(args, host=args.host, port=args.port, db=args.db)
    try:  # provisioning is `voicebot provision`'s job (./setup.sh runs it), not the server's
        check_model_dir(settings.whisper_dir)
    except ModelMissing as exc:
        print(f"voicebot serve: {exc}; ./setup.sh does it too", file=sys.stderr)
        return 2
    server.run(create_app(settings), settings, log_level=args.log_level)
    return 0


# -- call ----------------------------------------------------------------------------
def _events_url(media_url: str, call_id: str, token: str) -> str:
    parts = urlsplit(media_url)
    return urlunsplit(
        (parts.scheme, parts.netloc, f"/calls/{call_id}/events", f"token={token}", "")
    )


def cmd_call(args: argparse.Namespace) -> int:
    import soundfile as sf

    from telephony.simulator import SimulatedCall, load_audio
    from voicebot.gateway import endpoints
    from voicebot.secrets import load_credentials

    if not args.audio and not args.dtmf:
        print("voicebot call: give caller audio files, --dtmf keys, or both", file=sys.stderr)
        return 2
    settings = _settings(args)
    url = args.url or f"ws://{settings.host}:{settings.port}/{args.protocol}"
    credentials = load_credentials(settings)  # as the gateway derives them: each platform's own
    call = SimulatedCall(
        url,
        None,
        protocol=args.protocol,
        speed=args.speed,
        caller=args.caller,
        timeout_s=args.timeout,
        credentials=credentials,
        endpoints=endpoints(settings),
    )
    call.events_url = _events_url(url, call.call_id, credentials.secret)
    rate = PLATFORM_CLIENTS[args.protocol].wire_rate
    turns = [load_audio(path, rate) for path in args.audio]
    result = asyncio.run(call.run(turns, digits=args.dtmf or ""))
    if args.dialogue:  # the call as it was heard: the bot's prompts and the caller's turns
        for event in result.events:
            if event.get("type") == "bot_said":
                print(f"bot [{event.get('language') or '-'}]: {event.get('text', '')}")
            elif event.get("type") == "transcript":
                print(f"caller [{event.get('language') or '-'}]: {event.get('text', '')}")
            elif event.get("type") in ("language", "routed"):
                print(f"  ({event['type']}: {event.get('language')} {event.get('how') or ''})")
    for turn in result.turns:
        if args.json:
            _print_json(turn.as_dict())
        else:
            where = f" → {turn.forvaltning}" if turn.forvaltning else ""
            print(
                f"«{turn.transcript}» → {turn.intent} ({turn.confidence:.2f}) {turn.action}{where}; "
                f"decision after {turn.latency_ms['speech_end_to_decision']} ms"
            )
    if args.save_reply:
        sf.write(args.save_reply, result.reply_audio, result.wire_rate)
    if not result.turns:
        print("the bot made no decision during the call", file=sys.stderr)
        return 1
    return 0


# -- transcribe / classify -----------------------------------------------------------
def cmd_transcribe(args: argparse.Namespace) -> int:
    from faster_whisper.audio import decode_audio

    from voicebot.asr import WhisperAsr
    from voicebot.catalogue import load_catalogue
    from voicebot.provision import provision_for
    from voicebot.services import domain_prompt

    settings = _settings(args)
    _check_language_option(settings, args.language)
    asr = WhisperAsr(provision_for(settings), settings.asr)
    prompt = (
        domain_prompt(load_catalogue(settings.catalogue)) if settings.asr.domain_prompt else None
    )
    # As the bot does: the language detected among the configured ones (the first kept
    # below asr.language_margin), unless one is given.
    others = [code for code in settings.languages if code != settings.asr.language]
    asked = [args.language] if args.language else [settings.asr.language, *others]
    for path in args.audio:
        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        texts, total_ms, languages = [], 0.0, asked
        scores: dict[str, float] = {}
        for start in range(0, len(audio), 28 * SAMPLE_RATE):  # long files in 28 s pieces
            result = asr.transcribe(
                audio[start : start + 28 * SAMPLE_RATE], prompt, languages=languages
            )
            texts.append(result.text)
            total_ms += result.asr_ms
            scores = scores or result.language_scores
            languages = [result.language]  # detected on the first piece, kept for the rest
        row = {
            "file": str(path),
            "text": " ".join(t for t in texts if t),
            "language": languages[0],
            "language_scores": {k: round(v, 4) for k, v in scores.items()},
            "audio_s": round(len(audio) / SAMPLE_RATE, 3),
            "asr_ms": round(total_ms, 1),
        }
        _print_json(row) if args.json else print(f"{path} [{row['language']}]: {row['text']}")
    return 0


def _check_language_option(settings: Settings, language: str | None) -> None:
    """--language must name a configured language: an unknown one would otherwise fall back
    to another language's model or voice without a word."""
    if language is not None and language not in settings.languages:
        raise ConfigError(
            f"--language {language}: not one of the configured languages "
            f"({', '.join(settings.languages)})"
        )


def cmd_classify(args: argparse.Namespace) -> int:
    from voicebot.catalogue import load_catalogue
    from voicebot.privacy import mask_numbers
    from voicebot.services import load_classifier

    settings = _settings(args)
    _check_language_option(settings, args.language)
    catalogue = load_catalogue(settings.catalogue, settings.languages)
    classifier = load_classifier(settings, catalogue, args.language)
    texts = args.text or (line.rstrip("\n") for line in sys.stdin)
    for raw in texts:
        if not raw.strip():
            continue
        text = mask_numbers(raw)  # as the bot does: CPR and phone numbers never shown
        u = classifier.classify(text)
        intent = catalogue.intent(u.intent)
        row = {
            "text": text,
            "intent": u.intent,
            "confidence": round(u.confidence, 4),
            "forvaltning": intent.forvaltning,
            "action": intent.action.value,
            "explanation": u.explanation,
        }
        if args.json:
            _print_json(row)
        else:
            print(f"{u.intent:17s} {u.confidence:.2f} {intent.forvaltning or '-':13s} {text}")
    return 0


# -- queues --------------------------------------------------------------------------
def cmd_queues(args: argparse.Namespace) -> int:
    import time

    from voicebot.queues import open_store

    settings = _settings(args, db=args.db)
    store = open_store(settings.queue_backend, settings.db_path, settings.redis_url)
    waiting = store.waiting()
    stats = store.stats()
    if args.json:
        _print_json({"stats": stats, "waiting": [c.as_dict() for c in waiting]})
        return 0
    if not waiting:
        print("no calls waiting")
    for forvaltning, stat in sorted(stats.items()):
        print(f"{forvaltning}: {stat['waiting']} waiting, longest {stat['longest_wait_s']:.0f} s")
        for c in (c for c in waiting if c.forvaltning == forvaltning):
            age = time.time() - c.created_at
            print(
                f"  {c.call_id}  {c.intent or '-':16s} {c.confidence:.2f}  {age:5.0f} s  «{c.transcript}»"
            )
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from voicebot.queues import StoreError
    from voicebot.queues.forget import forget_call

    settings = _settings(args, db=args.db)  # the same store `serve` uses, found the same way
    try:
        found = forget_call(settings, args.call_id)
    except StoreError as exc:
        print(f"voicebot forget: {exc}; nothing was deleted", file=sys.stderr)
        return 1
    if found:
        print(f"removed {args.call_id} from: {', '.join(found)}")
    else:
        print(f"no data held for {args.call_id}")
    return 0


# -- reload --------------------------------------------------------------------------
def _gateway_url(settings: Settings) -> str:
    """The running gateway on this machine, as `serve` binds it (a wildcard bind is reached on
    loopback)."""
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def cmd_reload(args: argparse.Namespace) -> int:
    """POST /api/reload with the master secret: the gateway validates the catalogue file and
    swaps it in, or keeps the running one and says why. `kill -HUP <pid of serve>` does the
    same without an answer (the reason is in the gateway's log)."""
    import urllib.error
    import urllib.request

    settings = _settings(args)
    secret_file = settings.data_dir / "secret"
    try:
        secret = secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(
            f"voicebot reload: cannot read the master secret {secret_file} ({exc.strerror}); "
            "is `voicebot serve` running with this data_dir?",
            file=sys.stderr,
        )
        return 2
    url = (args.url or _gateway_url(settings)).rstrip("/") + "/api/reload"
    request = urllib.request.Request(
        url, method="POST", headers={"Authorization": f"Bearer {secret}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 422:
            print(f"voicebot reload: {url} answered {exc.code} {exc.reason}", file=sys.stderr)
            return 1
        status = json.loads(exc.read())
        print(
            f"voicebot reload: refused, the gateway keeps its catalogue:\n"
            f"{status['last_reload']['error']}",
            file=sys.stderr,
        )
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"voicebot reload: no gateway at {url}: {reason}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(status)
    else:
        print(
            f"catalogue reloaded from {status['path']} (sha256 {status['sha256'][:12]}, "
            f"{status['intents']} intents, forvaltninger {', '.join(status['forvaltninger'])}); "
            "calls in progress finish on the one they started with"
        )
    return 0


# -- prompts (recorded prompts: voicebot/prompts.py) -------------------------------------
def _prompt_script(settings: Settings, language: str | None = None) -> list[Any]:
    from voicebot.catalogue import load_catalogue
    from voicebot.prompts import prompt_script
    from voicebot.waiting_prompts import load_waiting

    _check_language_option(settings, language)
    catalogue = load_catalogue(settings.catalogue, settings.languages)
    waiting = load_waiting(settings, catalogue)
    return prompt_script(catalogue, waiting.prompts, [language] if language else settings.languages)


def _prompts_dir(args: argparse.Namespace, settings: Settings) -> Path:
    folder = args.dir or settings.tts.prompts_dir
    if folder is None:
        raise ConfigError("tts.prompts_dir: not set (set it, or give --dir)")
    return Path(folder)


def cmd_prompts_export(args: argparse.Namespace) -> int:
    from voicebot.prompts import write_script

    script = _prompt_script(_settings(args), args.language)
    out: Path | None = args.out
    dialect = "excel" if out is not None and out.suffix.lower() == ".csv" else "excel-tab"
    text = write_script(script, out, dialect)
    if out is None:
        sys.stdout.write(text)
    else:
        runtime = sum(1 for line in script if not line.recordable)
        print(
            f"{len(script)} lines written to {out} ({runtime} composed at run time are "
            "synthesized: kind 'runtime')",
            file=sys.stderr,
        )
    return 0


def cmd_prompts_check(args: argparse.Namespace) -> int:
    from voicebot.prompts import PromptsError, read_recording, survey

    settings = _settings(args)
    folder = _prompts_dir(args, settings)
    script = _prompt_script(settings, args.language)
    report, playable = survey(folder, script)
    refused: list[str] = []
    for path in playable.values():
        try:
            read_recording(path)
        except PromptsError as exc:
            refused.append(str(exc))
    runtime = [line for line in script if not line.recordable]
    if args.json:
        _print_json(
            {
                "folder": str(folder),
                "recorded": [f"{x.language}/{x.id}" for x in report.recorded],
                "missing": [f"{x.language}/{x.id}" for x in report.missing],
                "changed": [f"{x.language}/{x.id}" for x, _ in report.changed],
                "unlisted": [str(p) for p in report.unlisted],
                "unknown": [str(p) for p in report.unknown],
                "refused": refused,
                "runtime": [f"{x.language}/{x.id}" for x in runtime],
            }
        )
    else:
        print(
            f"{folder}: {len(report.recorded)} recorded, {len(report.missing)} missing, "
            f"{len(report.changed)} changed since recorded; {len(runtime)} composed at run "
            "time (always synthesized)"
        )
        for line in report.missing:
            print(f"missing  {line.language} {line.id}  {line.text}")
        for line, path in report.changed:
            print(f"changed  {line.language} {line.id}  {path}  now: {line.text}")
        for path in report.unlisted:
            print(f"no manifest line (not played)  {path}")
        for path in report.unknown:
            print(f"not in the script (not played)  {path}")
        for problem in refused:
            print(f"refused  {problem}")
    return 0 if report.ok and not refused else 1


def cmd_prompts_import(args: argparse.Namespace) -> int:
    from voicebot.prompts import import_recordings, read_script

    settings = _settings(args)
    folder = _prompts_dir(args, settings)
    read = read_script(args.script) if args.script else None
    imported = import_recordings(
        args.source, folder, _prompt_script(settings), read, language=args.language
    )
    for entry in imported:
        print(f"imported {entry.language} {entry.id} -> {folder / entry.file}")
    print(f"{len(imported)} recordings in {folder}; run `voicebot prompts check`, then reload")
    return 0


# -- provision -----------------------------------------------------------------------
def cmd_provision(args: argparse.Namespace) -> int:
    from voicebot.provision import ProvisionError, provision_from_hf, provision_whisper_base

    settings = _settings(args)
    try:
        if args.from_hf is None:
            path = provision_whisper_base(settings.whisper_dir, force=args.force)
            print(f"Whisper base ready in {path}")
            return 0
        done = provision_from_hf(
            args.from_hf, settings, args.quantization, args.out, force=args.force
        )
    except ProvisionError as exc:
        print(f"voicebot provision: {exc}", file=sys.stderr)
        return 1
    model_dir = done.model_dir.resolve()
    print(f"converted {args.from_hf} into {model_dir} ({args.quantization})")
    print(f"it heard in {done.clip}:\n  «{done.transcript}»")
    print(
        f"use it: set in the settings file (or VOICEBOT_ASR__MODEL_DIR)\n  asr.model_dir: {model_dir}"
    )
    return 0


# -- the parser ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voicebot", description="Danish phone-triage speech bot (offline, CPU)"
    )
    p.add_argument("--config", help="YAML settings file (default: $VOICEBOT_CONFIG)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the gateway (media endpoints, queues, console)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--db", help="queue database file (SQLite)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser(
        "call", help="call the bot as a phone platform would, with audio files as the caller"
    )
    s.add_argument("audio", nargs="*", help="caller audio, one file per turn (wav/mp3/flac)")
    s.add_argument(
        "--url", help="media WebSocket URL (default: ws://HOST:PORT/PROTOCOL from settings)"
    )
    s.add_argument("--protocol", default="twilio", choices=sorted(PLATFORM_CLIENTS))
    s.add_argument("--speed", type=float, default=1.0, help="stream N times faster than real time")
    s.add_argument("--save-reply", metavar="OUT.wav", help="write the bot's audio to this file")
    s.add_argument("--json", action="store_true", help="one JSON object per bot turn")
    s.add_argument("--dtmf", help="keys to press after the audio turns, one turn each")
    s.add_argument(
        "--caller", default="+4512345678", help="the caller's number as the platform reports it"
    )
    s.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    s.add_argument(
        "--dialogue", action="store_true", help="print what the bot said and what it heard"
    )
    s.set_defaults(func=cmd_call)

    s = sub.add_parser("transcribe", help="transcribe audio files with the bot's ASR")
    s.add_argument("audio", nargs="+")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--language",
        help="decode in this language (default: detected among the configured languages)",
    )
    s.set_defaults(func=cmd_transcribe)

    s = sub.add_parser("classify", help="classify texts (or lines of standard input) into intents")
    s.add_argument("text", nargs="*")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--language", help="the texts' language: its model and rules (default: asr.language)"
    )
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("queues", help="what waits in each forvaltning's queue")
    s.add_argument("--json", action="store_true")
    s.add_argument("--db")
    s.set_defaults(func=cmd_queues)

    s = sub.add_parser("forget", help="remove one call's data everywhere")
    s.add_argument("call_id")
    s.add_argument("--db", help="queue database file (SQLite), as given to serve")
    s.set_defaults(func=cmd_forget)

    add_agent_commands(sub)

    s = sub.add_parser(
        "reload", help="reload the running gateway's catalogue (validated first; as SIGHUP)"
    )
    s.add_argument("--url", help="the gateway's http URL (default: http://HOST:PORT of settings)")
    s.add_argument("--timeout", type=float, default=60.0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_reload)

    s = sub.add_parser(
        "provision",
        help="assemble and verify the Whisper model files, or convert a Hugging Face Whisper",
    )
    s.add_argument("--force", action="store_true", help="rebuild / replace an existing model dir")
    s.add_argument(
        "--from-hf",
        type=Path,
        metavar="DIR",
        help="convert this local Hugging Face Whisper checkpoint (needs the bench extra)",
    )
    s.add_argument(
        "--quantization",
        default="int8",
        help="CTranslate2 weight type for --from-hf (default int8; float16 keeps full precision)",
    )
    s.add_argument(
        "--out",
        type=Path,
        help="model dir for --from-hf (default: data_dir/models/NAME-ct2)",
    )
    s.set_defaults(func=cmd_provision)

    s = sub.add_parser("prompts", help="recorded prompts: the script, the folder, its check")
    prompts = s.add_subparsers(dest="prompts_command", required=True)
    s = prompts.add_parser("export", help="the recording script: id, language, kind, text, sha256")
    s.add_argument("--language", help="only this language (default: every configured one)")
    s.add_argument("--out", type=Path, help="write here (.csv: comma-separated; else TSV)")
    s.set_defaults(func=cmd_prompts_export)
    s = prompts.add_parser("check", help="missing recordings and recordings of changed texts")
    s.add_argument("--dir", type=Path, help="the prompts folder (default: tts.prompts_dir)")
    s.add_argument("--language", help="only this language")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_prompts_check)
    s = prompts.add_parser("import", help="copy a voice artist's recordings into the folder")
    s.add_argument("source", type=Path, help="the recordings: <language>/<id>.wav|flac|ogg")
    s.add_argument("--script", type=Path, help="the exported script the artist read (its hashes)")
    s.add_argument("--language", help="the language of files directly in SOURCE")
    s.add_argument("--dir", type=Path, help="the prompts folder (default: tts.prompts_dir)")
    s.set_defaults(func=cmd_prompts_import)

    add_tool_commands(sub)
    return p


def add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The tools' commands (training, evaluation, benchmarks), found through the entry points
    their packages register: the runtime never imports the tools by name."""
    for entry in sorted(entry_points(group=TOOL_COMMANDS), key=lambda e: e.name):
        try:
            add = entry.load()
        except ImportError as exc:  # a broken tool must not take `voicebot serve` down with it
            log.warning("command %s (%s) not available: %s", entry.name, entry.value, exc)
            continue
        add(sub)


def main(argv: list[str] | None = None) -> int:
    from voicebot.privacy import install_log_masking

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_masking()
    try:
        code: int = args.func(args)  # the subcommand's cmd_* function
        return code
    except (ConfigError, CatalogueError) as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `voicebot eval-intents ... | head`: the reader has gone
        sys.stderr.close()
        return 0
