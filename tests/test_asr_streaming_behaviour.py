"""The ASR logic that needs no model (voicebot/asr.py): which request the pool serves first and
with what, what LocalAgreement commits, which language is chosen, when output is a loop,
the decode cap and where a long turn is cut (issue 19: survivors of mutation testing)."""

from __future__ import annotations

import asyncio
import threading
import traceback
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from tests.fakes import ScriptedAsr
from voicebot.asr import (
    AsrPool,
    AsrResult,
    LocalAgreement,
    ModelMissing,
    Overloaded,
    WhisperAsr,
    _generated,
    _looping,
    check_model_dir,
    choose_language,
    max_new_tokens,
    split_at_pauses,
)
from voicebot.config import AsrSettings


def tagged(tag: float) -> np.ndarray:
    return np.full(16000, tag, np.float32)


KINDS = ("_partial_decode", "_speculative_decode", "_final_decode")
Call = tuple[str, int, str | None, object, str, str]


def decode_kind() -> str:
    """The pool's named entry point on the stack (what a sampling profiler sees)."""
    names = [frame.name for frame in traceback.extract_stack()]
    # the outermost; a name may be wrapped (mutmut's trampolines: "xǁAsrPoolǁ_final_decode…")
    return next((kind for name in names for kind in KINDS if kind in name), "none")


def spy_on(fake: ScriptedAsr) -> list[Call]:
    """Record each decode the pool asks of `fake`: method, audios, previous text, languages,
    the thread it ran on and the pool's entry point."""
    calls: list[Call] = []
    transcribe, transcribe_batch = fake.transcribe, fake.transcribe_batch

    def one(audio, previous_text=None, prefix=None, *, languages=None):
        thread = threading.current_thread().name
        calls.append(("one", 1, previous_text, languages, thread, decode_kind()))
        return transcribe(audio, previous_text, prefix, languages=languages)

    def batch(audios, previous_text=None, *, languages=None):
        thread = threading.current_thread().name
        calls.append(("batch", len(audios), previous_text, languages, thread, decode_kind()))
        return transcribe_batch(audios, previous_text, languages=languages)

    fake.transcribe, fake.transcribe_batch = one, batch  # type: ignore[method-assign]
    return calls


# == the pool ================================================================================
def test_finals_are_batched_only_with_the_same_previous_text_and_languages():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.1)
        calls = spy_on(fake)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=8, max_batch=4))
        requests = [
            (tagged(1), None, None),  # runs at once
            (tagged(2), "pas", ("da",)),
            (tagged(3), "pas", ("da",)),
            (tagged(4), "pas", ("da", "en")),  # other languages: not with 2 and 3
            (tagged(5), "bil", ("da", "en")),  # other previous text: not with 4
        ]
        tasks = [asyncio.create_task(pool.final(a, p, lang)) for a, p, lang in requests]
        await asyncio.gather(*tasks)
        # a guess and a partial carry their previous text and languages too
        assert (await pool.speculative(tagged(6), "kort", ("en",))).text == "tekst"
        assert (await pool.partial(tagged(7), "vej", ("da", "sv"))).text == "tekst"
        pool.shutdown()
        return fake.decoded, calls

    decoded, calls = asyncio.run(scenario())
    assert decoded == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # in the order the callers asked
    assert [(method, n, prev, lang) for method, n, prev, lang, *_ in calls] == [
        ("one", 1, None, None),
        ("batch", 2, "pas", ("da",)),
        ("one", 1, "pas", ("da", "en")),
        ("one", 1, "bil", ("da", "en")),
        ("one", 1, "kort", ("en",)),
        ("one", 1, "vej", ("da", "sv")),
    ]
    assert all(thread.startswith("asr") for *_, thread, _ in calls)  # off the event loop
    # a profiler tells the kinds of decode apart by the pool's entry points
    kinds = [kind for *_, kind in calls]
    assert kinds == ["_final_decode"] * 4 + ["_speculative_decode", "_partial_decode"]


def test_one_worker_decodes_one_thing_at_a_time():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.05)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=8, max_batch=1))
        active, most = 0, 0
        transcribe = fake.transcribe

        def counted(audio, previous_text=None, prefix=None, *, languages=None):
            nonlocal active, most
            active += 1
            most = max(most, active)
            try:
                return transcribe(audio, previous_text, prefix, languages=languages)
            finally:
                active -= 1

        fake.transcribe = counted  # type: ignore[method-assign]
        await asyncio.gather(*(pool.final(tagged(i)) for i in range(4)))
        pool.shutdown()
        return most

    assert asyncio.run(scenario()) == 1


def test_load_and_busy_count_running_decodes_and_waiting_finals():
    async def scenario():
        pool = AsrPool(ScriptedAsr("tekst", delay_s=0.2), AsrSettings(workers=2, max_batch=1))
        assert (pool.load, pool.busy) == (0, False)
        final = asyncio.create_task(pool.final(tagged(1)))
        await asyncio.sleep(0.02)
        assert (pool.load, pool.busy) == (1, False)  # one of two workers
        partial = asyncio.create_task(pool.partial(tagged(2)))
        await asyncio.sleep(0.02)
        assert (pool.load, pool.busy) == (2, True)
        assert await pool.partial(tagged(3)) is None  # no worker free
        waiting = asyncio.create_task(pool.final(tagged(4)))
        await asyncio.sleep(0.02)
        assert pool.load == 3  # two running, one waiting
        assert (await partial).text == "tekst"
        await asyncio.gather(final, waiting)
        assert (pool.load, pool.busy) == (0, False)
        pool.shutdown()

    asyncio.run(scenario())


def test_a_partial_is_skipped_while_a_guess_waits():
    async def scenario():
        pool = AsrPool(ScriptedAsr("tekst", delay_s=0.1), AsrSettings(workers=1, max_batch=1))
        running = asyncio.create_task(pool.speculative(tagged(1)))
        waiting = asyncio.create_task(pool.speculative(tagged(2)))
        await asyncio.sleep(0.02)
        skipped = await pool.partial(tagged(3))
        await asyncio.gather(running, waiting)
        pool.shutdown()
        return skipped

    assert asyncio.run(scenario()) is None


def test_the_overload_bound_is_exact_and_freed_when_a_final_ends():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.1)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=2, max_batch=1))
        first = asyncio.create_task(pool.final(tagged(1)))
        second = asyncio.create_task(pool.final(tagged(2)))
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded, match="2 final decodes already waiting"):
            await pool.final(tagged(3))
        await first
        third = await pool.final(tagged(4))  # a slot is free again
        await second
        fourth = await pool.final(tagged(5))
        pool.shutdown()
        return fake.decoded, third, fourth

    decoded, third, fourth = asyncio.run(scenario())
    assert decoded == [1.0, 2.0, 4.0, 5.0] and third.text == fourth.text == "tekst"


def test_after_a_burst_the_whole_bound_is_free_again():
    async def burst(pool: AsrPool, tags: range) -> None:
        tasks = [asyncio.create_task(pool.final(tagged(t))) for t in tags]
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded):
            await pool.final(tagged(99))
        await asyncio.gather(*tasks)

    async def scenario():
        pool = AsrPool(ScriptedAsr("tekst", delay_s=0.05), AsrSettings(workers=1, max_pending=3))
        for _ in range(3):  # each burst again holds exactly max_pending finals
            await burst(pool, range(3))
        pool.shutdown()

    asyncio.run(scenario())


def test_guesses_beyond_max_pending_are_refused_and_served_in_order():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.1)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=2, max_batch=1))
        running = asyncio.create_task(pool.speculative(tagged(1)))
        await asyncio.sleep(0.02)
        waiting = [asyncio.create_task(pool.speculative(tagged(t))) for t in (2, 3)]
        await asyncio.sleep(0.02)
        refused = await pool.speculative(tagged(4))  # two guesses already wait
        results = await asyncio.gather(running, *waiting)
        pool.shutdown()
        return fake.decoded, refused, results

    decoded, refused, results = asyncio.run(scenario())
    assert refused is None and all(r.text == "tekst" for r in results)
    assert decoded == [1.0, 2.0, 3.0]


def test_a_cancelled_guess_frees_its_place_before_a_new_guess_is_counted():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.1)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=1, max_batch=1))
        running = asyncio.create_task(pool.speculative(tagged(1)))
        await asyncio.sleep(0.02)
        stale = asyncio.create_task(pool.speculative(tagged(2)))
        await asyncio.sleep(0.02)
        stale.cancel()
        await asyncio.sleep(0)
        fresh = await pool.speculative(tagged(3))  # the stale one no longer takes the place
        await running
        pool.shutdown()
        return fake.decoded, fresh

    decoded, fresh = asyncio.run(scenario())
    assert fresh is not None and decoded == [1.0, 3.0]


def test_a_final_whose_caller_hung_up_is_not_decoded():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.1)
        pool = AsrPool(fake, AsrSettings(workers=1, max_pending=4, max_batch=4))
        running = asyncio.create_task(pool.final(tagged(1)))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(pool.final(tagged(2)))
        kept = asyncio.create_task(pool.final(tagged(3)))
        await asyncio.sleep(0.02)
        gone.cancel()
        await asyncio.gather(running, kept)
        pool.shutdown()
        return fake.decoded, fake.batches

    decoded, batches = asyncio.run(scenario())
    assert decoded == [1.0, 3.0] and batches == [1, 1]


def test_a_recogniser_returning_too_few_results_fails_the_calls_left_without_one():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.05)
        transcribe_batch = fake.transcribe_batch
        fake.transcribe_batch = (
            lambda audios, previous_text=None, *, languages=None: (  # type: ignore[method-assign]
                transcribe_batch(audios[:1], previous_text, languages=languages)
            )
        )
        pool = AsrPool(fake, AsrSettings(workers=1, max_batch=4))
        tasks = [asyncio.create_task(pool.final(tagged(t))) for t in (1, 2, 3)]
        # a guard against a hang, not a timing: every caller must hear back
        outcome = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        pool.shutdown()
        return outcome

    first, second, third = asyncio.run(scenario())
    assert first.text == second.text == "tekst"  # the first alone, then 2 and 3 together
    assert isinstance(third, ValueError)


def test_the_pool_holds_each_running_decode_and_lets_go_when_it_ends():
    async def scenario():
        pool = AsrPool(ScriptedAsr("tekst", delay_s=0.1), AsrSettings(workers=1))
        task = asyncio.create_task(pool.final(tagged(1)))
        await asyncio.sleep(0.02)
        running = len(pool._tasks)  # asyncio keeps only weak references to tasks
        await task
        await asyncio.sleep(0)
        pool.shutdown()
        return running, len(pool._tasks)

    assert asyncio.run(scenario()) == (1, 0)


def test_shutdown_does_not_wait_for_a_running_decode():
    async def scenario():
        fake = ScriptedAsr("tekst", delay_s=0.5)
        pool = AsrPool(fake, AsrSettings(workers=1))
        task = asyncio.create_task(pool.final(tagged(1)))
        await asyncio.sleep(0.05)
        pool.shutdown()
        finished_at_shutdown = fake.calls
        await task
        return finished_at_shutdown

    assert asyncio.run(scenario()) == 0


# == LocalAgreement ==========================================================================
def test_a_hypothesis_shorter_than_the_commitment_commits_nothing_and_is_the_tentative():
    la = LocalAgreement()
    la.update(["hej", "jeg", "ringer"])
    la.update(["hej", "jeg", "ringer", "om"])
    assert la.committed == ["hej", "jeg", "ringer"]
    assert la.update(["hej"]) == [] and la.tentative == []
    assert la.update(["hej", "jeg", "ringer", "om", "pas"]) == []  # nothing agreed after it yet
    assert la.update(["hej", "jeg", "ringer", "om", "pas"]) == ["om", "pas"]


def test_agreement_ignores_case_and_surrounding_punctuation_only():
    la = LocalAgreement()
    la.update(["«Hej!»", "Pas;", "'bil'", "vej:"])
    assert la.update(["hej", "pas", "bil", "vej"]) == ["hej", "pas", "bil", "vej"]
    la = LocalAgreement()
    la.update(["pas"])
    assert la.update(["pa-s"]) == []  # inner characters count


# == choosing the language ===================================================================
def test_the_detected_language_is_chosen_when_it_leads_by_the_margin_among_those_asked():
    detected = [("<|en|>", 0.6), ("<|de|>", 0.3), ("<|da|>", 0.1)]
    language, scores = choose_language(detected, ["da", "en"], margin=0.2)
    assert language == "en"
    assert scores == pytest.approx({"da": 1 / 7, "en": 6 / 7})  # German is not asked about


def test_a_lead_exactly_at_the_margin_is_enough_and_below_it_the_call_keeps_its_language():
    detected = [("<|en|>", 0.75), ("<|da|>", 0.25)]
    assert choose_language(detected, ["da", "en"], margin=0.5)[0] == "en"
    assert choose_language(detected, ["da", "en"], margin=0.51)[0] == "da"
    close = [("<|en|>", 0.55), ("<|da|>", 0.45)]
    assert choose_language(close, ["da", "en"], margin=0.2)[0] == "da"


def test_the_lead_is_over_the_runner_up_not_over_nothing():
    detected = [("<|en|>", 0.5), ("<|sv|>", 0.45), ("<|da|>", 0.05)]
    assert choose_language(detected, ["da", "en", "sv"], margin=0.3)[0] == "da"
    assert choose_language(detected, ["da", "en", "sv"], margin=0.04)[0] == "en"


def test_an_asked_language_whisper_did_not_score_counts_as_zero():
    language, scores = choose_language([("<|en|>", 0.6), ("<|de|>", 0.4)], ["da", "en"], 0.2)
    assert language == "en" and scores == {"da": 0.0, "en": 1.0}


def test_a_single_language_is_chosen_with_all_the_probability():
    assert choose_language([("<|da|>", 0.3), ("<|en|>", 0.7)], ["da"], 0.2) == ("da", {"da": 1.0})


def test_no_probability_for_any_asked_language_keeps_the_first():
    language, scores = choose_language([("<|fr|>", 1.0)], ["da", "en"], margin=0.0)
    assert language == "da" and scores == {"da": 0.0, "en": 0.0}


# == loops, caps, costs ======================================================================
def test_three_equal_words_in_a_row_are_a_loop_two_are_not():
    assert _looping("jeg bor hjemme hjemme hjemme")
    assert _looping("nej, Nej. nej!")
    assert not _looping("hjemme hjemme ude hjemme hjemme")
    assert not _looping("")
    assert not _looping("Xa aX a")  # only punctuation is stripped from a word, never letters


def test_the_compression_test_is_strict_like_whispers():
    """Whisper's rule: a ratio above 2.4 is a loop; exactly 2.4 is not."""
    at_limit = "jeg vil gerne " * 4 + "jeg "  # 60 bytes, no word thrice in a row
    data = at_limit.encode()
    if len(data) / len(zlib.compress(data)) != 2.4:  # zlib builds may compress differently
        pytest.skip("this zlib does not compress the phrase to exactly 25 bytes")
    assert not _looping(at_limit)
    assert _looping(at_limit + "vil gerne jeg vil gerne")  # compresses better still


def test_text_too_short_to_judge_by_compression_is_judged_by_its_words():
    assert not _looping("ab" * 12)  # 24 bytes: never a loop by compression
    assert not _looping("ja ja, det er rigtigt, ja ja, det er rigtigt")


def test_the_decode_cap_is_twelve_tokens_a_second_plus_twelve():
    assert max_new_tokens(0.0) == 12
    assert max_new_tokens(2.0) == 36
    assert max_new_tokens(2.55) == 42  # whole tokens


def test_generated_counts_the_tokens_of_the_first_sequence():
    assert _generated(SimpleNamespace(sequences_ids=[[5, 6, 7], [1]])) == 3
    assert _generated(SimpleNamespace(sequences_ids=[])) == 0


def test_likely_noise_needs_both_whispers_conditions_strictly():
    def result(no_speech: float, logprob: float) -> AsrResult:
        return AsrResult("hm", logprob, no_speech, 0.3, 6.0, 1.0)

    assert result(0.61, -1.01).likely_noise
    assert not result(0.6, -2.0).likely_noise
    assert not result(0.9, -1.0).likely_noise
    assert not result(0.9, -0.5).likely_noise
    assert result(0.9, -1.5).words == ["hm"]


def test_a_model_directory_missing_files_names_them(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        ModelMissing,
        match=r"lacks tokenizer\.json, vocabulary\.json; run `voicebot provision` \(or set "
        r"asr\.model_dir to a CTranslate2 Whisper model\)",
    ):
        check_model_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "vocabulary.json").write_text("{}")
    check_model_dir(tmp_path)


def test_the_encoder_window_is_even_and_follows_the_settings():
    asr = WhisperAsr.__new__(WhisperAsr)
    asr.settings = AsrSettings(window_margin_s=1.0, window_min_s=6.0, trim_window=True)
    assert asr.window_frames(1001) == 1102  # 10.01 s + 1 s, rounded up to even
    assert asr.window_frames(499) == 600  # 4.99 s + 1 s is under the 6 s minimum
    assert asr.window_frames(2899) == 3000  # 28.99 s + 1 s: capped at 30 s
    asr.settings = AsrSettings(trim_window=False)
    assert asr.window_frames(100) == 3000  # the setting off: Whisper's full window


# == cutting a long turn =====================================================================
WINDOW = 100  # samples per VAD value in these tests (16 kHz: 6.25 ms)


def test_a_turn_within_the_limit_is_one_piece():
    audio = np.arange(48000, dtype=np.float32)
    (piece,) = split_at_pauses(audio, np.ones(480), WINDOW, max_s=3.0)
    np.testing.assert_array_equal(piece, audio)


def test_a_long_turn_is_cut_at_the_quietest_window_of_each_pieces_last_third():
    audio = np.arange(16000 * 7, dtype=np.float32)  # 7 s, at most 3 s a piece
    probs = np.ones(len(audio) // WINDOW)
    probs[200] = 0.0  # 1.25 s: in the first piece's first two thirds, ignored
    probs[400] = 0.2  # 2.5 s: in its last third
    probs[420] = 0.3
    probs[700] = 0.1  # 4.375 s: the second piece's last third starts at 4.5 s, ignored
    probs[800] = 0.1  # 5 s: in it
    pieces = split_at_pauses(audio, probs, WINDOW, max_s=3.0)
    assert [len(p) for p in pieces] == [40000, 40000, 32000]
    np.testing.assert_array_equal(np.concatenate(pieces), audio)


def test_a_piece_without_vad_values_is_cut_at_the_limit():
    audio = np.zeros(16000 * 7, np.float32)
    pieces = split_at_pauses(audio, np.ones(10), WINDOW, max_s=3.0)
    assert [len(p) for p in pieces] == [48000, 48000, 16000]
    # VAD values that stop exactly where the last third begins: none to choose from either
    pieces = split_at_pauses(audio, np.ones(320), WINDOW, max_s=3.0)
    assert [len(p) for p in pieces] == [48000, 48000, 16000]


def test_the_default_limit_leaves_room_in_whispers_30_s_window():
    audio = np.zeros(16000 * 26, np.float32)
    pieces = split_at_pauses(audio, np.ones(len(audio) // WINDOW), WINDOW)
    assert len(pieces) == 2 and all(len(p) <= 25 * 16000 for p in pieces)
