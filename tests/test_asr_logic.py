"""ASR logic that needs no model: LocalAgreement, the encoder window, back-pressure."""

import asyncio

import numpy as np
import pytest

from tests.fakes import ScriptedAsr
from voicebot.asr import AsrPool, LocalAgreement, Overloaded, WhisperAsr, _looping
from voicebot.config import AsrSettings


def test_local_agreement_commits_what_two_hypotheses_share():
    la = LocalAgreement()
    assert la.update(["jeg", "skal"]) == []
    assert la.update(["jeg", "skal", "have"]) == ["jeg", "skal"]
    assert la.update(["jeg", "skal", "have", "et", "nyt"]) == ["have"]
    assert la.update(["jeg", "skal", "have", "et", "nyt", "pas."]) == ["et", "nyt"]
    assert la.committed == ["jeg", "skal", "have", "et", "nyt"]
    assert la.tentative == ["pas."]


def test_local_agreement_ignores_case_and_punctuation_and_never_uncommits():
    la = LocalAgreement()
    la.update(["Hej,", "jeg"])
    assert la.update(["hej", "jeg", "ringer"]) == ["hej", "jeg"]
    assert la.update(["Dav", "jeg", "ringer"]) == []  # disagrees with the commitment
    assert la.committed == ["hej", "jeg"]


def test_looping_output_is_detected():
    assert _looping("og tilbygning, " * 20)
    assert _looping("Jeg kan ufer hjemme hjemme hjemme hjemme")
    assert _looping("I, I, I, I, I, I")
    assert not _looping("Jeg vil gerne bestille et nyt pas til min datter, hun er fire år.")
    assert not _looping("ja ja, det er rigtigt")


def test_window_is_trimmed_to_the_audio_plus_margin():
    asr = WhisperAsr.__new__(WhisperAsr)
    asr.settings = AsrSettings(window_margin_s=1.0, window_min_s=6.0)
    assert asr.window_frames(400) == 600  # 4 s → the 6 s minimum
    assert asr.window_frames(1000) == 1100  # 10 s + 1 s margin
    assert asr.window_frames(2950) == 3000  # never past Whisper's 30 s
    assert asr.window_frames(400, trim=False) == 3000


def test_pool_refuses_finals_beyond_its_bound_and_skips_partials_when_busy():
    async def scenario():
        pool = AsrPool(ScriptedAsr("tekst", delay_s=0.2), AsrSettings(workers=1, max_pending=2))
        audio = np.zeros(16000, np.float32)
        first = asyncio.create_task(pool.final(audio))
        second = asyncio.create_task(pool.final(audio))
        await asyncio.sleep(0.01)
        assert await pool.partial(audio) is None  # finals come first
        with pytest.raises(Overloaded):
            await pool.final(audio)
        results = await asyncio.gather(first, second)
        assert [r.text for r in results] == ["tekst", "tekst"]
        assert await pool.partial(audio) is not None  # idle again
        pool.shutdown()

    asyncio.run(scenario())


def test_finals_that_wait_are_decoded_together_in_order():
    async def scenario():
        fake = ScriptedAsr([f"tekst {i}" for i in range(5)], delay_s=0.1)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=8, max_batch=3))
        audio = np.zeros(16000, np.float32)
        tasks = [asyncio.create_task(pool.final(audio)) for _ in range(5)]
        results = await asyncio.gather(*tasks)
        pool.shutdown()
        return fake.batches, [r.text for r in results]

    batches, texts = asyncio.run(scenario())
    assert batches == [1, 3, 1]  # the first alone; the next three waited and went together
    assert texts == ["tekst 0", "tekst 1", "tekst 2", "tekst 3", "tekst 4"]  # each its own


def test_guesses_run_only_when_no_final_waits_and_are_dropped_once_stale():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.1)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=4, max_batch=1))
        audio = lambda tag: np.full(16000, tag, np.float32)  # noqa: E731
        running = asyncio.create_task(pool.final(audio(1)))
        await asyncio.sleep(0.01)
        guess = asyncio.create_task(pool.speculative(audio(2)))
        stale = asyncio.create_task(pool.speculative(audio(3)))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(pool.final(audio(4)))  # a caller waits: it goes first
        await asyncio.sleep(0.01)
        assert await pool.speculative(audio(5)) is None  # no new guess while a final waits
        stale.cancel()  # its caller spoke on before it started
        await asyncio.gather(running, waiting, guess)
        await asyncio.sleep(0.15)
        pool.shutdown()
        return fake.decoded, stale.cancelled()

    decoded, cancelled = asyncio.run(scenario())
    assert cancelled
    assert decoded == [1.0, 4.0, 2.0]  # the final that waited before the older guess; 3 never


def test_guesses_do_not_count_towards_overload():
    async def scenario():
        pool = AsrPool(ScriptedAsr("tekst", delay_s=0.1), AsrSettings(workers=1, max_pending=1))
        audio = np.zeros(16000, np.float32)
        guess = asyncio.create_task(pool.speculative(audio))
        await asyncio.sleep(0.01)
        result = await pool.final(audio)  # not refused: only finals count
        await guess
        pool.shutdown()
        return result

    assert asyncio.run(scenario()).text == "tekst"


def test_a_failing_decode_fails_every_call_in_its_batch():
    class Broken(ScriptedAsr):
        def transcribe_batch(self, audios, previous_text=None, *, languages=None):
            raise RuntimeError("decoder fault")

    async def scenario():
        pool = AsrPool(Broken("tekst", delay_s=0.05), AsrSettings(workers=1, max_batch=4))
        audio = np.zeros(16000, np.float32)
        tasks = [asyncio.create_task(pool.final(audio)) for _ in range(3)]
        outcome = await asyncio.gather(*tasks, return_exceptions=True)
        pool.shutdown()
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome[0].text == "tekst"
    assert all(isinstance(o, RuntimeError) for o in outcome[1:])
