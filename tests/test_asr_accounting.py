"""What a decode cost, carried on the result (tokens, re-decodes), and the decode cap that
follows the turn's length. A fake CTranslate2 model: no weights needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from voicebot.asr import WhisperAsr, max_new_tokens
from voicebot.config import AsrSettings

EOT = 50257
WORDS = {1: "hjemme", 2: "jeg", 3: "vil", 4: "gerne", 5: "have", 6: "et", 7: "pas"}
LOOP = [2, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # "jeg hjemme hjemme …": Whisper stuck in a loop
GOOD = [2, 3, 4, 5, 6, 7]


class FakeTokenizer:
    eot, sot, sot_prev, language, transcribe, no_timestamps = EOT, 50258, 50361, 50285, 50359, 50363

    def decode(self, tokens: list[int]) -> str:
        return " ".join(WORDS[t] for t in tokens)

    def encode(self, text: str) -> list[int]:
        return [2 for _ in text.split()]


@dataclass
class FakeWhisper:
    """Loops unless decoded with the repetition guard; records each call's max_length."""

    loops_in_batch: bool = True
    calls: list[dict] = field(default_factory=list)

    def generate(self, features, prompts, max_length: int, **options):
        self.calls.append({"max_length": max_length, "batch": len(prompts), **options})
        guarded = "no_repeat_ngram_size" in options
        seq = GOOD if guarded or (len(prompts) > 1 and not self.loops_in_batch) else LOOP
        return [
            SimpleNamespace(sequences_ids=[list(seq)], scores=[-0.2], no_speech_prob=0.01)
            for _ in prompts
        ]


def fake_asr(model: FakeWhisper) -> WhisperAsr:
    asr = WhisperAsr.__new__(WhisperAsr)
    asr.settings = AsrSettings()
    asr.model = model
    asr.tokenizer = FakeTokenizer()
    asr.features = lambda audio, padding: np.zeros((80, len(audio) // 160 + 1), np.float32)
    asr._suppress = []
    return asr


def seconds(s: float) -> np.ndarray:
    return np.zeros(int(s * 16000), np.float32)


def test_a_looping_turn_reports_its_tokens_and_the_redecode():
    result = fake_asr(FakeWhisper()).transcribe(seconds(3))
    assert result.text == "jeg vil gerne have et pas"
    assert result.redecodes == 1
    assert result.tokens == len(LOOP) + len(GOOD)  # both passes cost decoding time


def test_a_clean_turn_has_no_redecode():
    model = FakeWhisper()
    asr = fake_asr(model)
    model.generate = lambda f, p, max_length, **o: [
        SimpleNamespace(sequences_ids=[list(GOOD)], scores=[-0.1], no_speech_prob=0.0)
    ]
    result = asr.transcribe(seconds(2))
    assert (result.tokens, result.redecodes) == (len(GOOD), 0)


def test_a_batch_item_that_loops_is_decoded_alone_and_says_so():
    model = FakeWhisper(loops_in_batch=True)
    results = fake_asr(model).transcribe_batch([seconds(2), seconds(3)])
    # Each item: the batch pass (loop), then alone: a loop again, then the guarded retry.
    assert [r.redecodes for r in results] == [2, 2]
    assert all(r.tokens == 2 * len(LOOP) + len(GOOD) for r in results)
    clean = fake_asr(FakeWhisper(loops_in_batch=False)).transcribe_batch([seconds(2)] * 2)
    assert [(r.tokens, r.redecodes) for r in clean] == [(len(GOOD), 0)] * 2


def test_the_decode_cap_follows_the_turns_length():
    assert max_new_tokens(8.0) - max_new_tokens(2.0) == max_new_tokens(6.0) - max_new_tokens(0.0)
    assert max_new_tokens(2.0) < max_new_tokens(4.0) < max_new_tokens(8.0)
    model = FakeWhisper()
    asr = fake_asr(model)
    asr.transcribe(seconds(2))
    short = model.calls[0]["max_length"]
    model.calls.clear()
    asr.transcribe(seconds(8))
    assert model.calls[0]["max_length"] > short
    assert all(c["max_length"] < 448 for c in model.calls)


def test_the_transcript_event_carries_the_decode_cost(tmp_path, catalogue, classifier, speaker):
    """The benchmark explains a slow turn from this event (tokens, re-decodes)."""
    from voicebot.asr import AsrPool, AsrResult
    from voicebot.config import load_settings
    from voicebot.events import EventBus
    from voicebot.queues import SqliteQueueStore
    from voicebot.services import Services
    from voicebot.session import CallSession
    from voicebot.vad import SileroVad

    from .test_session import ScriptedLine, run, silence

    class CostlyAsr:
        def transcribe(self, audio, previous_text=None, prefix=None, *, languages=None):
            text = "jeg skal have et nyt pas" if len(audio) > 8000 else ""
            return AsrResult(text, -0.2, 0.01, len(audio) / 16000, 6.0, 5.0, 41, 1)

    svc = Services(
        settings=load_settings(None, data_dir=tmp_path),
        catalogue=catalogue,
        vad=SileroVad(),
        asr=AsrPool(CostlyAsr(), AsrSettings(workers=1)),
        classifier=classifier,
        speaker=speaker,
        store=SqliteQueueStore(tmp_path / "q.db"),
        events=EventBus(),
        domain_prompt=None,
    )
    events: list[tuple[str, dict]] = []
    original = svc.events.publish
    svc.events.publish = lambda call_id, kind, **data: (
        events.append((kind, data)),
        original(call_id, kind, **data),
    )
    speech = speaker.speak("Jeg skal have et nyt pas.")
    run(CallSession(ScriptedLine([silence(0.3), speech, silence(1.5)]), svc))
    transcripts = [d for k, d in events if k == "transcript"]
    assert transcripts and (transcripts[0]["tokens"], transcripts[0]["redecodes"]) == (41, 1)
