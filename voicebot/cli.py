"""The `voicebot` command. Interfaces are stable: scripts and benchmarks depend on them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from telephony.registry import PLATFORM_CLIENTS
from voicebot.agents import add_agent_commands
from voicebot.catalogue import CatalogueError
from voicebot.config import ConfigError, Settings, load_settings

log = logging.getLogger("voicebot")


def _settings(args: argparse.Namespace, **overrides) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


# -- serve ---------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from models.provision import provision_whisper_base
    from voicebot import server
    from voicebot.app import create_app

    settings = _settings(args, host=args.host, port=args.port, db=args.db)
    if settings.asr.model_dir is None:
        provision_whisper_base(settings.whisper_dir)
    server.run(create_app(settings), settings, log_level=args.log_level)
    return 0


# -- call ----------------------------------------------------------------------------
def _events_url(media_url: str, call_id: str, token: str) -> str:
    parts = urlsplit(media_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/calls/{call_id}/events", f"token={token}", ""))


def cmd_call(args: argparse.Namespace) -> int:
    import soundfile as sf

    from telephony.simulator import PLATFORMS, SimulatedCall, load_audio
    from voicebot.secrets import load_or_create_secret

    if not args.audio and not args.dtmf:
        print("voicebot call: give caller audio files, --dtmf keys, or both", file=sys.stderr)
        return 2
    settings = _settings(args)
    url = args.url or f"ws://{settings.host}:{settings.port}/{args.protocol}"
    token = load_or_create_secret(settings.data_dir)
    call = SimulatedCall(url, None, protocol=args.protocol, speed=args.speed, caller=args.caller,
                         timeout_s=args.timeout)
    call.events_url = _events_url(url, call.call_id, token)
    rate = PLATFORMS[args.protocol].wire_rate
    turns = [load_audio(path, rate) for path in args.audio]
    result = asyncio.run(call.run(turns, digits=args.dtmf or ""))
    for turn in result.turns:
        if args.json:
            _print_json(turn.as_dict())
        else:
            where = f" → {turn.forvaltning}" if turn.forvaltning else ""
            print(f"«{turn.transcript}» → {turn.intent} ({turn.confidence:.2f}) {turn.action}{where}; "
                  f"decision after {turn.latency_ms['speech_end_to_decision']} ms")
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
    from voicebot.services import domain_prompt

    settings = _settings(args)
    _ensure_model(settings)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    prompt = domain_prompt(load_catalogue(settings.catalogue)) if settings.asr.domain_prompt else None
    for path in args.audio:
        audio = decode_audio(str(path), sampling_rate=16000)
        texts, total_ms = [], 0.0
        for start in range(0, len(audio), 28 * 16000):  # long files in 28 s pieces
            result = asr.transcribe(audio[start:start + 28 * 16000], prompt)
            texts.append(result.text)
            total_ms += result.asr_ms
        row = {"file": str(path), "text": " ".join(t for t in texts if t), "audio_s": round(len(audio) / 16000, 3),
               "asr_ms": round(total_ms, 1)}
        _print_json(row) if args.json else print(f"{path}: {row['text']}")
    return 0


def _long_transcriber(settings: Settings, asr, previous_text: str | None):
    """16 kHz audio of any length → text: pieces of at most 25 s cut at VAD pauses."""
    from voicebot.asr import split_at_pauses
    from voicebot.vad import WINDOW, SileroVad

    vad = SileroVad()

    def transcribe(audio) -> str:
        probs = vad.stream().push(audio) if len(audio) > 28 * 16000 else None
        pieces = [audio] if probs is None else split_at_pauses(audio, probs, WINDOW)
        return " ".join(t for t in (asr.transcribe(p, previous_text).text for p in pieces) if t)

    return transcribe


def cmd_eval_asr(args: argparse.Namespace) -> int:
    from faster_whisper.audio import decode_audio

    from voicebot.asr import WhisperAsr
    from voicebot.catalogue import load_catalogue
    from voicebot.evaluation import evaluate_asr, load_manifest
    from voicebot.services import domain_prompt

    settings = _settings(args)
    if args.no_trim:
        settings.asr.trim_window = False
    _ensure_model(settings)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    use_prompt = settings.asr.domain_prompt if args.domain_prompt is None else args.domain_prompt
    prompt = domain_prompt(load_catalogue(settings.catalogue)) if use_prompt else None
    result = evaluate_asr(load_manifest(args.manifest), _long_transcriber(settings, asr, prompt),
                          lambda p: decode_audio(str(p), sampling_rate=16000), progress=not args.json)
    if args.json:
        _print_json(result.as_dict())
    else:
        for row in result.rows:
            print(f"{row['wer']:5.2f}  {row['asr_ms']:7.0f} ms  {Path(row['audio']).name}: {row['text']}")
        print(f"WER {result.wer:.3f}  CER {result.cer:.3f}  over {result.utterances} utterances "
              f"({result.audio_s:.0f} s audio); latency p50 {result.latency_ms_p50:.0f} ms, "
              f"p95 {result.latency_ms_p95:.0f} ms; RTF {result.asr_s / max(result.audio_s, 1e-9):.3f}")
    return 0


def cmd_eval_intents(args: argparse.Namespace) -> int:
    from voicebot.catalogue import load_catalogue
    from voicebot.dialogue import DialoguePolicy
    from voicebot.evaluation import first_turns_of, intent_metrics, load_labelled_tsv, load_manifest
    from voicebot.services import load_classifier

    settings = _settings(args)
    catalogue = load_catalogue(settings.catalogue)
    classifier = load_classifier(settings, catalogue)
    if args.audio:  # a manifest of audio files labelled with intents: ASR first
        from faster_whisper.audio import decode_audio

        from voicebot.asr import WhisperAsr

        _ensure_model(settings)
        transcribe = _long_transcriber(settings, WhisperAsr(settings.whisper_dir, settings.asr), None)
        rows = [(transcribe(decode_audio(str(i.audio), sampling_rate=16000)), i.reference)
                for i in load_manifest(args.file)]
    else:
        rows = load_labelled_tsv(args.file)
    unknown = sorted({intent for _, intent in rows} - set(catalogue.intents))
    if unknown:
        print(f"voicebot eval-intents: {args.file}: unknown intent ids {', '.join(unknown)}", file=sys.stderr)
        return 2
    results = [classifier.classify(text, explain=False) for text, _ in rows]
    gold = [g for _, g in rows]
    metrics = intent_metrics(gold, [r.intent for r in results],
                             [r.confidence for r in results], labels=sorted(catalogue.intents))
    # What the caller would live through: the dialogue policy's first action on each turn.
    metrics["first_turn"] = first_turns_of(gold, [text for text, _ in rows], results,
                                           lambda: DialoguePolicy(catalogue, classifier, settings.dialogue))
    if args.json:
        _print_json(metrics)
        return 0
    print(f"{metrics['n']} utterances: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"out-of-scope false accepts {metrics.get('oos_false_accept_rate') or 0:.3f}, ECE {metrics['ece']:.3f}")
    ft = metrics["first_turn"]
    print("first turn, as the dialogue acts on it: " + ", ".join(
        f"{label} {ft[key]}" for key, label in (("acts_right", "acts on the right intent"),
                                                ("acts_wrong", "acts on a wrong one"),
                                                ("false_112", "of those, needless 112"),
                                                ("confirms", "confirms"), ("rephrase", "asks again"))))
    for intent, recall in sorted(metrics["per_intent_recall"].items()):
        print(f"  recall {recall:5.2f}  {intent}")
    labels = metrics["labels"]
    short = [label[:5] for label in labels]
    print("confusion (rows: true, columns: predicted)\n" + " " * 17 + " ".join(f"{s:>5}" for s in short))
    for label, row in zip(labels, metrics["confusion"], strict=True):
        if any(row):
            print(f"{label:>16} " + " ".join(f"{v:5d}" if v else "    ." for v in row))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from voicebot.catalogue import load_catalogue
    from voicebot.privacy import mask_numbers
    from voicebot.services import load_classifier

    settings = _settings(args)
    catalogue = load_catalogue(settings.catalogue)
    classifier = load_classifier(settings, catalogue)
    texts = args.text or (line.rstrip("\n") for line in sys.stdin)
    for raw in texts:
        if not raw.strip():
            continue
        text = mask_numbers(raw)  # as the bot does: CPR and phone numbers never shown
        u = classifier.classify(text)
        intent = catalogue.intent(u.intent)
        row = {"text": text, "intent": u.intent, "confidence": round(u.confidence, 4),
               "forvaltning": intent.forvaltning, "action": intent.action.value, "explanation": u.explanation}
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
            print(f"  {c.call_id}  {c.intent or '-':16s} {c.confidence:.2f}  {age:5.0f} s  «{c.transcript}»")
    return 0


def forget_call(settings: Settings, call_id: str) -> list[str]:
    """Remove one call's data everywhere it is kept; returns where something was found.

    A call's data is its queue record: in the configured back-end (SQLite row, or the Redis
    hash, its stream entry and index entries), and in a SQLite queue file left from before a
    switch to Redis. The agent console shows only what the queue holds (its accounts database
    keeps no call data); live events and metrics keep none either. Logs hold call ids but no
    transcripts unless log_transcripts is on (SECURITY.md: what an operator must still do)."""
    from voicebot.queues import SqliteQueueStore, open_store

    found: list[str] = []
    store = open_store(settings.queue_backend, settings.db_path, settings.redis_url)
    try:
        if store.forget(call_id):
            found.append(f"{settings.queue_backend} queue")
    finally:
        store.close()
    if settings.queue_backend != "sqlite" and settings.db_path.exists():
        old = SqliteQueueStore(settings.db_path)
        try:
            if old.forget(call_id):
                found.append(f"SQLite queue file {settings.db_path}")
        finally:
            old.close()
    return found


def cmd_forget(args: argparse.Namespace) -> int:
    settings = _settings(args)
    found = forget_call(settings, args.call_id)
    if found:
        print(f"removed {args.call_id} from: {', '.join(found)}")
    else:
        print(f"no data held for {args.call_id}")
    return 0


# -- models --------------------------------------------------------------------------
def _ensure_model(settings: Settings) -> None:
    if settings.asr.model_dir is None:
        from models.provision import provision_whisper_base

        provision_whisper_base(settings.whisper_dir)


def cmd_provision(args: argparse.Namespace) -> int:
    from models.provision import provision_whisper_base

    settings = _settings(args)
    path = provision_whisper_base(settings.whisper_dir, force=args.force)
    print(f"Whisper base ready in {path}")
    return 0


def cmd_train_intents(args: argparse.Namespace) -> int:
    from models.train_intents import train, training_examples

    settings = _settings(args)
    out = Path(args.out) if args.out else settings.intent_model
    summary = train(training_examples(use_asr=not args.no_asr), out)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def cmd_make_training_data(args: argparse.Namespace) -> int:
    from models.make_training_data import make_training_data
    from voicebot.asr import WhisperAsr

    settings = _settings(args)
    _ensure_model(settings)
    made = make_training_data(WhisperAsr(settings.whisper_dir, settings.asr), args.per_utterance,
                              heldout=not args.no_heldout)
    print(f"new transcripts: {made} (cached rows were kept)")
    return 0


# -- the parser ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voicebot", description="Danish phone-triage speech bot (offline, CPU)")
    p.add_argument("--config", help="YAML settings file (default: $VOICEBOT_CONFIG)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the gateway (media endpoints, queues, console)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--db", help="queue database file (SQLite)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("call", help="call the bot as a phone platform would, with audio files as the caller")
    s.add_argument("audio", nargs="*", help="caller audio, one file per turn (wav/mp3/flac)")
    s.add_argument("--url", help="media WebSocket URL (default: ws://HOST:PORT/PROTOCOL from settings)")
    s.add_argument("--protocol", default="twilio", choices=sorted(PLATFORM_CLIENTS))
    s.add_argument("--speed", type=float, default=1.0, help="stream N times faster than real time")
    s.add_argument("--save-reply", metavar="OUT.wav", help="write the bot's audio to this file")
    s.add_argument("--json", action="store_true", help="one JSON object per bot turn")
    s.add_argument("--dtmf", help="keys to press after the audio turns, one turn each")
    s.add_argument("--caller", default="+4512345678", help="the caller's number as the platform reports it")
    s.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    s.set_defaults(func=cmd_call)

    s = sub.add_parser("transcribe", help="transcribe audio files with the bot's ASR")
    s.add_argument("audio", nargs="+")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_transcribe)

    s = sub.add_parser("classify", help="classify texts (or lines of standard input) into intents")
    s.add_argument("text", nargs="*")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("queues", help="what waits in each forvaltning's queue")
    s.add_argument("--json", action="store_true")
    s.add_argument("--db")
    s.set_defaults(func=cmd_queues)

    s = sub.add_parser("forget", help="remove one call's data everywhere")
    s.add_argument("call_id")
    s.set_defaults(func=cmd_forget)

    add_agent_commands(sub)

    s = sub.add_parser("provision", help="assemble and verify the Whisper model files")
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_provision)

    s = sub.add_parser("train-intents", help="train the intent model and export it to ONNX")
    s.add_argument("--no-asr", action="store_true", help="train on written utterances only")
    s.add_argument("--out", help="output .onnx path (default: settings.intent_model)")
    s.set_defaults(func=cmd_train_intents)

    s = sub.add_parser("eval-asr", help="WER/CER and latency of the ASR on a manifest (audio<TAB>text)")
    s.add_argument("manifest")
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-trim", action="store_true", help="full 30 s encoder window (for comparison)")
    s.add_argument("--domain-prompt", action=argparse.BooleanOptionalAction, default=None,
                   help="bias decoding with the catalogue's key terms (default: asr.domain_prompt)")
    s.set_defaults(func=cmd_eval_asr)

    s = sub.add_parser("eval-intents", help="accuracy, macro-F1, recall, confusion on a labelled TSV")
    s.add_argument("file", help="TSV with columns text, intent (or with --audio: audio<TAB>intent manifest)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--audio", action="store_true", help="FILE is a manifest of audio files; run ASR first")
    s.set_defaults(func=cmd_eval_intents)

    s = sub.add_parser("make-training-data",
                       help="synthesize, phone-line and transcribe the intent utterances (cached)")
    s.add_argument("--per-utterance", type=int, default=2, help="voices per utterance")
    s.add_argument("--no-heldout", action="store_true", help="skip the held-back split")
    s.set_defaults(func=cmd_make_training_data)
    from benchmarks.bench import add_bench_command  # suites import their libraries lazily
    add_bench_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from voicebot.privacy import install_log_masking

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()
    try:
        return args.func(args)
    except (ConfigError, CatalogueError) as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `voicebot eval-intents ... | head`: the reader has gone
        sys.stderr.close()
        return 0
