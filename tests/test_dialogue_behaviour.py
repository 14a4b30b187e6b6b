"""The dialogue policy's documented behaviour, edge by edge (issue 19, mutation testing of
voicebot/dialogue.py): thresholds met exactly, what each reply to a confirm question does,
where a hand-off goes and what the agent reads in its reason, the goodbyes, the keypad,
silence, language switches and greetings. Each test names what the caller hears or where the
call goes; the policy is driven directly, as in tests/test_dialogue.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from voicebot.catalogue import Action
from voicebot.config import DialogueSettings, Thresholds
from voicebot.dialogue import DialoguePolicy, State
from voicebot.understanding import Understanding

DANISH_GOODBYE = "Tak for opkaldet. Farvel."
DANISH_HUMAN = "Jeg stiller dig videre til en medarbejder. Bliv venligst i røret."
DANISH_REPHRASE = "Undskyld, det forstod jeg ikke helt. Vil du sige det med andre ord?"
AFTER_ANSWER_DA = "Vil du tale med en medarbejder, så sig det, eller tryk nul."


def u(
    intent: str, confidence: float, rule: str | None = None, explanation: list[str] | None = None
) -> Understanding:
    return Understanding(intent, confidence, [], explanation or [], rule)


def heard_as(default: Understanding, **by_text: Understanding) -> SimpleNamespace:
    """A classifier that understands the given texts as given and anything else as `default`."""
    return SimpleNamespace(classify=lambda text, explain=True: by_text.get(text, default))


NOTHING = u("out_of_scope", 0.1)


def make(catalogue, classifier, language: str | None = None, **settings) -> DialoguePolicy:
    base = {"accept": 0.6, "confirm": 0.35, **settings}
    return DialoguePolicy(catalogue, classifier, DialogueSettings(**base), language)


@pytest.fixture
def policy(catalogue, classifier) -> DialoguePolicy:
    return make(catalogue, classifier)


@pytest.fixture
def english(catalogue, classifier) -> DialoguePolicy:
    """An English call: the shipped English thresholds (dialogue.per_language.en)."""
    return make(catalogue, classifier, "en")


# == thresholds: "at or above" means at ===================================================
def test_a_guess_exactly_at_the_accept_threshold_is_acted_on_at_once(policy):
    d = policy.on_utterance("min skraldespand", u("waste", 0.6))
    assert (d.action, d.forvaltning, d.hand_off) == ("route", "TMF", True)
    assert policy.state is State.DONE


def test_a_guess_exactly_at_the_confirm_threshold_is_asked_about(policy):
    d = policy.on_utterance("noget med skrald", u("waste", 0.35))
    assert d.action == "confirm" and d.say == "Handler det om affald eller skrald?"
    assert (d.intent, d.confidence, d.reason) == ("waste", 0.35, "unsure, asking once")


def test_a_guess_just_below_the_confirm_threshold_asks_to_rephrase(policy):
    d = policy.on_utterance("noget med skrald", u("waste", 0.34, explanation=["skrald"]))
    assert d.action == "rephrase" and d.say == DANISH_REPHRASE
    # The agent (and the log) read what the bot guessed and how unsure it was.
    assert d.reason == "not understood (waste 0.34)"
    assert (d.intent, d.confidence, d.explanation) == ("waste", 0.34, ["skrald"])
    assert policy.state is State.LISTENING


def test_the_confirm_question_carries_the_models_grounds(policy):
    d = policy.on_utterance("noget med skrald", u("waste", 0.5, explanation=["skrald"]))
    assert d.explanation == ["skrald"] and policy.state is State.CONFIRMING


def test_in_english_the_question_is_english_and_the_english_thresholds_hold(english):
    en = english.settings.thresholds("en")
    between = (en.confirm + en.accept) / 2  # above the base accept: acted on in Danish
    assert english.settings.accept <= between
    d = english.on_utterance("my bin", u("waste", between))
    assert d.say == "Is it about waste or rubbish collection?"
    d = english.on_utterance("yes", u("out_of_scope", 0.2))
    assert d.action == "route" and d.say.startswith(
        "I am putting you through to Technical and Environmental Administration."
    )


def test_once_the_caller_was_not_understood_even_a_sure_guess_is_asked_about(policy):
    assert policy.on_utterance("øh", u("out_of_scope", 0.9)).action == "rephrase"
    d = policy.on_utterance("min skraldespand er ikke tømt", u("waste", 0.99))
    assert d.action == "confirm" and not d.hand_off


# == emergencies and requests for a person win everywhere ==================================
def test_an_emergency_rings_112_first_and_hands_the_call_to_the_contact_centre(policy):
    d = policy.on_utterance("min mand er faldet", u("emergency", 0.8, explanation=["faldet"]))
    assert d.action == "emergency" and d.say.startswith("Ring et et to med det samme.")
    assert (d.forvaltning, d.hand_off, d.intent) == ("KONTAKTCENTER", True, "emergency")
    assert (d.confidence, d.explanation, d.reason) == (0.8, ["faldet"], "model")
    assert policy.state is State.DONE


def test_an_emergency_in_english_says_call_112_in_english(english):
    d = english.on_utterance("he is not breathing", u("emergency", 1.0, rule="not breathing"))
    assert d.say.startswith("Call one one two now.") and d.reason == "not breathing"


ENGLISH_NOTICE = "If someone is in danger, hang up and call one one two now."
DANISH_NOTICE = "Hvis nogen er i fare, så læg på og ring et et to nu."


def test_an_emergency_exactly_at_the_base_confirm_threshold_hears_112_first(english):
    # English asks from 0.70; from the base 0.35 an emergency hears "call 112" all the same,
    # as a notice while below the language's own threshold, and the call goes on.
    d = english.on_utterance("help", u("emergency", 0.35, explanation=["help"]))
    assert (
        d.say
        == f"{ENGLISH_NOTICE} Sorry, I did not quite understand. Can you say it in other words?"
    )
    assert (d.action, d.emergency_notice, d.hand_off) == ("rephrase", True, False)
    assert d.reason == "possible emergency (emergency 0.35)" and d.explanation == ["help"]
    assert english.state is State.LISTENING


def test_an_emergency_exactly_at_the_accept_threshold_is_acted_on(english, policy):
    accept = english.settings.thresholds("en").accept
    d = english.on_utterance("help", u("emergency", accept))
    assert (d.action, d.hand_off, d.emergency_notice) == ("emergency", True, False)
    d = policy.on_utterance("hjælp", u("emergency", policy.settings.accept))
    assert (d.action, d.hand_off, d.emergency_notice) == ("emergency", True, False)


def test_a_possible_emergency_in_danish_hears_the_notice_and_the_call_goes_on(policy):
    # Between the confirm and accept thresholds, where another errand would be asked about.
    d = policy.on_utterance("min mand", u("emergency", 0.59))
    assert d.say == f"{DANISH_NOTICE} {DANISH_REPHRASE}"
    assert (d.action, d.emergency_notice, d.hand_off) == ("rephrase", True, False)
    assert policy.state is State.LISTENING and policy.failures == 1


def test_an_emergency_phrase_is_acted_on_whatever_the_models_confidence(english):
    d = english.on_utterance("he is bleeding", u("emergency", 0.4, rule="bleeding"))
    assert d.action == "emergency" and d.say.startswith("Call one one two now.")


def test_a_possible_emergency_counts_as_not_understood_and_the_menu_says_the_notice_once(
    english, catalogue
):
    english.on_utterance("help", u("emergency", 0.4))
    d = english.on_utterance("help", u("emergency", 0.4))
    assert d.action == "keypad_menu" and d.emergency_notice
    assert d.say == catalogue.keypad_menu_text("en") and d.say.count(ENGLISH_NOTICE) == 1
    last = english.on_utterance("help", u("emergency", 0.4))
    assert (
        last.say
        == f"{ENGLISH_NOTICE} I am putting you through to a person. Please stay on the line."
    )
    assert (last.action, last.hand_off, last.forvaltning) == ("human", True, "KONTAKTCENTER")


def test_the_keypad_menu_starts_with_the_emergency_notice(policy, catalogue):
    policy.on_utterance("øh", NOTHING)
    d = policy.on_utterance("øh", NOTHING)
    assert d.action == "keypad_menu" and d.emergency_notice
    assert d.say.startswith(f"{DANISH_NOTICE} Du kan også bruge tastaturet. Tryk 1 for pas")


def test_a_plain_rephrase_carries_no_emergency_notice(policy):
    d = policy.on_utterance("øh", NOTHING)
    assert d.action == "rephrase" and not d.emergency_notice and "et et to" not in d.say


def test_an_emergency_below_the_threshold_without_a_rule_is_not_declared(policy):
    d = policy.on_utterance("øh", u("emergency", 0.34))
    assert d.action == "rephrase" and not d.hand_off


def test_a_language_with_a_lower_confirm_threshold_takes_emergencies_from_it(catalogue):
    settings = {"per_language": {"en": Thresholds(accept=0.5, confirm=0.2)}}
    english = make(catalogue, heard_as(NOTHING), "en", **settings)
    d = english.on_utterance("help", u("emergency", 0.25))
    assert d.emergency_notice and d.say.startswith(ENGLISH_NOTICE)  # heard 112 first
    assert english.on_utterance("help", u("emergency", 0.5)).action == "emergency"


def test_an_emergency_after_an_answer_still_rings_112(policy):
    policy.on_utterance("hvad koster et pas", u("passport", 0.9))
    assert policy.on_utterance("han er faldet", u("emergency", 0.9)).action == "emergency"


def test_asking_for_a_person_reaches_the_contact_centre_with_the_models_confidence(policy):
    d = policy.on_utterance("en medarbejder", u("human_agent", 0.8, explanation=["medarbejder"]))
    assert (d.action, d.say, d.forvaltning, d.hand_off) == (
        "human",
        DANISH_HUMAN,
        "KONTAKTCENTER",
        True,
    )
    assert (d.intent, d.confidence, d.explanation) == ("human_agent", 0.8, ["medarbejder"])
    assert d.reason == "caller asked for a person" and policy.state is State.DONE


def test_a_request_for_a_person_by_rule_is_honoured_however_unsure_the_model(policy):
    d = policy.on_utterance("menneske", u("human_agent", 0.05, rule="menneske"))
    assert d.action == "human" and d.hand_off


def test_a_request_for_a_person_below_the_threshold_is_not_honoured_unheard(policy):
    assert policy.on_utterance("hm", u("human_agent", 0.34)).action == "rephrase"


# == replies to the confirm question =======================================================
def asked(policy: DialoguePolicy, intent: str = "waste", confidence: float = 0.45) -> None:
    d = policy.on_utterance("noget uklart", u(intent, confidence, explanation=["uklart"]))
    assert d.action == "confirm"


def test_yes_acts_on_the_guess_with_its_own_confidence_and_grounds(policy):
    asked(policy, "waste", 0.45)
    d = policy.on_utterance("ja", u("out_of_scope", 0.2))
    assert (d.action, d.intent, d.forvaltning) == ("route", "waste", "TMF")
    assert (d.confidence, d.explanation, d.reason) == (0.45, ["uklart"], "confirmed by the caller")


def test_a_yes_in_english_is_heard_in_an_english_call(english):
    asked(english, "waste", 0.7)
    assert english.on_utterance("yeah", u("out_of_scope", 0.2)).action == "route"


def test_a_word_that_only_starts_like_yes_is_not_a_yes(catalogue):
    # "jo" is a yes; "jobcentret" is a new errand, not an answer.
    policy = make(catalogue, heard_as(NOTHING))
    asked(policy, "waste")
    d = policy.on_utterance("jobcentret", u("job_centre", 0.9))
    assert d.action == "rephrase" and d.reason == "no yes or no to the confirm question"
    assert not d.hand_off


def test_ja_and_three_more_words_is_a_plain_yes(catalogue):
    policy = make(catalogue, heard_as(NOTHING))
    asked(policy, "waste")
    assert policy.on_utterance("ja min gamle spand", u("out_of_scope", 0.2)).action == "route"


def test_ja_and_four_words_about_something_else_is_not_a_yes(catalogue):
    policy = make(catalogue, heard_as(NOTHING))
    asked(policy, "waste")
    d = policy.on_utterance("ja min gamle spand igen", u("out_of_scope", 0.2))
    assert d.action == "rephrase" and not d.hand_off


def test_a_yes_of_several_words_counts_as_one_yes(catalogue):
    # "ja det" is one yes: "ja det er min spand" is a yes and three words about it.
    policy = make(catalogue, heard_as(NOTHING))
    asked(policy, "waste")
    assert policy.on_utterance("ja det er min spand", u("out_of_scope", 0.2)).action == "route"


def test_a_long_yes_is_checked_against_the_errand_without_an_explanation(catalogue):
    seen: list[tuple[str, bool]] = []

    def classify(text: str, explain: bool = True) -> Understanding:
        seen.append((text, explain))
        return u("waste", 0.9)

    policy = make(catalogue, SimpleNamespace(classify=classify))
    asked(policy, "waste")
    d = policy.on_utterance("øh ja min skraldespand er ikke blevet tømt", u("waste", 0.5))
    assert d.action == "route" and seen == [("min skraldespand er ikke blevet tømt", False)]


def test_a_plain_no_asks_to_rephrase_and_says_so_to_the_agent(policy):
    asked(policy)
    d = policy.on_utterance("nej", u("out_of_scope", 0.3))
    assert (d.action, d.reason) == ("rephrase", "caller said no to the confirm question")
    assert policy.state is State.LISTENING


def test_no_then_another_errand_is_acted_on(catalogue):
    classifier = heard_as(NOTHING, **{"det er parkering": u("parking_fine", 0.35)})
    policy = make(catalogue, classifier)
    asked(policy, "waste")
    d = policy.on_utterance("Nej, det er parkering.", u("out_of_scope", 0.2))
    # at the confirm threshold exactly: "no" has already said the first guess was wrong
    assert (d.action, d.intent, d.confidence) == ("answer", "parking_fine", 0.35)


def test_no_then_an_errand_heard_too_unsure_asks_to_rephrase(catalogue):
    classifier = heard_as(NOTHING, **{"det er parkering": u("parking_fine", 0.34)})
    policy = make(catalogue, classifier)
    asked(policy, "waste")
    d = policy.on_utterance("nej det er parkering", u("out_of_scope", 0.2))
    assert (d.action, d.reason) == ("rephrase", "caller said no to the confirm question")


def test_no_then_something_out_of_scope_asks_to_rephrase(catalogue):
    classifier = heard_as(NOTHING, **{"det er noget andet": u("out_of_scope", 0.99)})
    policy = make(catalogue, classifier)
    asked(policy, "waste")
    d = policy.on_utterance("nej det er noget andet", u("out_of_scope", 0.2))
    assert (d.action, d.reason) == ("rephrase", "caller said no to the confirm question")


def test_no_then_the_same_errand_again_is_a_denial_not_an_act(catalogue):
    classifier = heard_as(NOTHING, **{"min skraldespand": u("waste", 0.9)})
    policy = make(catalogue, classifier)
    asked(policy, "waste")
    d = policy.on_utterance("nej min skraldespand", u("waste", 0.9))
    assert (d.action, d.reason, d.intent) == ("rephrase", "denied", "waste")
    assert not d.hand_off


def test_the_longest_no_phrase_is_taken_off_before_the_rest_is_understood(catalogue):
    classifier = heard_as(NOTHING, **{"det er parkering": u("parking_fine", 0.9)})
    policy = make(catalogue, classifier)
    asked(policy, "waste")
    d = policy.on_utterance("nej tak det er parkering", u("out_of_scope", 0.2))
    assert d.intent == "parking_fine"


def test_hesitation_before_no_and_a_new_errand_is_left_out_of_the_errand(catalogue):
    # "øh nej, det er parkering": the errand understood is "det er parkering", not the
    # whole turn with its "øh nej" (as the hesitation is left out before a yes).
    classifier = heard_as(NOTHING, **{"det er parkering": u("parking_fine", 0.9)})
    policy = make(catalogue, classifier)
    asked(policy, "waste")
    d = policy.on_utterance("øh nej, det er parkering", u("out_of_scope", 0.2))
    assert (d.action, d.intent) == ("answer", "parking_fine")


def test_a_no_after_hesitation_and_before_a_ja_is_a_no(policy):
    asked(policy)
    d = policy.on_utterance("øh nej ja", u("out_of_scope", 0.2))
    assert d.action == "rephrase" and d.reason == "caller said no to the confirm question"


def test_an_understood_reply_that_is_neither_yes_nor_no_is_a_failure(policy):
    asked(policy, "waste")
    d = policy.on_utterance("det handler om mit pas", u("passport", 0.35))  # exactly confirm
    assert (d.action, d.reason, d.intent) == (
        "rephrase",
        "no yes or no to the confirm question",
        "passport",
    )


def test_an_unclear_reply_to_the_confirm_question_is_not_understood(policy):
    asked(policy, "waste")
    d = policy.on_utterance("hmm måske", u("passport", 0.34))
    assert (d.action, d.reason) == ("rephrase", "not understood (passport 0.34)")
    d = policy.on_utterance("hmm måske", u("passport", 0.34))
    assert d.action == "keypad_menu"  # the failures add up


def test_an_out_of_scope_reply_to_the_confirm_question_is_not_understood(policy):
    asked(policy, "waste")
    d = policy.on_utterance("blablabla", u("out_of_scope", 0.9))
    assert d.reason == "not understood (out_of_scope 0.90)"


def test_a_greeting_while_the_question_waits_is_not_taken_for_silence(policy):
    asked(policy, "waste")
    assert policy.on_utterance("hej", u("out_of_scope", 0.2)).action == "rephrase"


# == after an answer =======================================================================
def test_an_answer_is_followed_by_the_offer_of_a_person(policy):
    d = policy.on_utterance("pas", u("passport", 0.9, rule="pas", explanation=["pas"]))
    assert d.action == "answer" and d.say.startswith("Pas søger du i Borgerservice.")
    assert d.say.endswith(AFTER_ANSWER_DA + " Ellers kan du bare lægge på.")
    assert (d.intent, d.confidence, d.explanation, d.reason) == ("passport", 0.9, ["pas"], "pas")
    assert (d.forvaltning, d.hand_off) == (None, False)
    assert policy.state is State.AFTER_ANSWER


def test_a_national_body_answer_is_said_as_written_its_own_offer_included(policy, catalogue):
    d = policy.on_utterance("boligstøtte", u("national_body", 0.9))
    assert d.action == "national_body"
    assert d.say == catalogue.intent("national_body").answer["da"]
    assert policy.state is State.AFTER_ANSWER


@pytest.mark.parametrize(
    "thanks",
    ["tak", "Tak.", "mange tak", "tak for det", "thanks", "thank you", "thank you very much"],
)
def test_thanks_after_an_answer_ends_the_call_politely(policy, thanks):
    policy.on_utterance("pas", u("passport", 0.9))
    d = policy.on_utterance(thanks, u("out_of_scope", 0.3))
    assert (d.action, d.say, d.hang_up, d.hand_off) == ("goodbye", DANISH_GOODBYE, True, False)
    assert d.reason == "caller was done after the answer" and policy.state is State.DONE


def test_no_after_an_answer_says_goodbye_in_english_in_an_english_call(english):
    english.on_utterance("passport", u("passport", 0.9))
    d = english.on_utterance("no thanks", u("out_of_scope", 0.3))
    assert (d.action, d.say) == ("goodbye", "Thank you for calling. Goodbye.")


def test_no_and_a_new_errand_after_an_answer_takes_it_up_instead_of_hanging_up(catalogue):
    # "nej, men min skraldespand ..." was heard as "no, I am done": goodbye, and hung up.
    errand = {"men min skraldespand er ikke tømt": u("waste", 0.9)}
    policy = make(catalogue, heard_as(NOTHING, **errand))
    policy.on_utterance("pas", u("passport", 0.9))
    d = policy.on_utterance("Nej, men min skraldespand er ikke tømt.", u("waste", 0.9))
    assert (d.action, d.forvaltning, d.hang_up) == ("route", "TMF", False)


def test_no_thanks_and_nothing_understood_after_an_answer_is_still_goodbye(catalogue):
    policy = make(catalogue, heard_as(NOTHING, **{"det var det hele": u("waste", 0.34)}))
    policy.on_utterance("pas", u("passport", 0.9))
    assert policy.on_utterance("nej tak det var det hele", NOTHING).action == "goodbye"


def test_yes_after_an_answer_reaches_a_person_for_that_matter(policy):
    policy.on_utterance("pas", u("passport", 0.9))
    d = policy.on_utterance("ja", u("out_of_scope", 0.3))
    assert (d.action, d.intent, d.forvaltning) == ("human", "passport", "KFF")
    assert d.reason == "asked for a person after the answer" and policy.state is State.DONE


def test_yes_after_a_national_body_answer_reaches_the_contact_centre(policy):
    policy.on_utterance("skat", u("national_body", 0.9))
    d = policy.on_utterance("ja", u("out_of_scope", 0.3))
    assert (d.action, d.forvaltning) == ("human", "KONTAKTCENTER")


def test_a_new_errand_after_an_answer_is_taken_up(policy):
    policy.on_utterance("pas", u("passport", 0.9))
    d = policy.on_utterance("og min skraldespand er ikke tømt", u("waste", 0.95))
    assert (d.action, d.forvaltning) == ("route", "TMF")


def test_after_the_goodbye_a_language_name_switches_nothing(policy):
    policy.on_utterance("pas", u("passport", 0.9))
    policy.on_utterance("tak", u("out_of_scope", 0.3))
    d = policy.on_utterance("English", u("out_of_scope", 0.3))
    assert d.action != "language" and d.language is None


# == hand-offs after failures ==============================================================
@pytest.mark.parametrize("guess", ["waste", "passport", "social_services", "national_body"])
def test_a_caller_never_understood_goes_to_the_contact_centre_with_the_best_guess(policy, guess):
    # Not to the guess's own queue: a guess below the thresholds is no reason to make a
    # citizen wait in a forvaltning's queue (a wrong one is the worst outcome).
    forvaltning = "KONTAKTCENTER"
    decisions = [policy.on_utterance("øh", u(guess, 0.2, explanation=["øh"])) for _ in range(3)]
    assert [d.action for d in decisions] == ["rephrase", "keypad_menu", "human"]
    menu = decisions[1]  # the agent's log says why, and what the bot guessed
    assert (menu.reason, menu.intent, menu.confidence) == (
        f"not understood ({guess} 0.20)",
        guess,
        0.2,
    )
    d = decisions[-1]
    assert (d.forvaltning, d.intent, d.confidence, d.explanation) == (
        forvaltning,
        guess,
        0.2,
        ["øh"],
    )
    assert (d.say, d.hand_off) == (DANISH_HUMAN, True)
    assert d.reason == f"not understood ({guess} 0.20); tried 2 times"
    assert policy.state is State.DONE


def test_the_keypad_menu_comes_in_the_callers_language(english, catalogue):
    english.on_utterance("uh", u("out_of_scope", 0.2))
    d = english.on_utterance("uh", u("out_of_scope", 0.2))
    assert d.action == "keypad_menu" and d.say == catalogue.keypad_menu_text("en")
    assert "For the job centre and cash benefit, press 5." in d.say


@pytest.mark.parametrize(("retries", "actions"), [(0, ["human"]), (1, ["rephrase", "human"])])
def test_fewer_retries_reach_a_person_sooner(catalogue, classifier, retries, actions):
    policy = make(catalogue, classifier, max_retries=retries)
    got = [policy.on_utterance("øh", u("out_of_scope", 0.2)).action for _ in actions]
    assert got == actions
    assert policy.state is State.DONE


def test_the_hand_off_reason_counts_the_tries(catalogue, classifier):
    policy = make(catalogue, classifier, max_retries=1)
    policy.on_utterance("øh", u("out_of_scope", 0.2))
    d = policy.on_utterance("øh", u("out_of_scope", 0.2))
    assert d.reason == "not understood (out_of_scope 0.20); tried 1 times"
    assert (d.intent, d.forvaltning) == ("out_of_scope", "KONTAKTCENTER")


# == the keypad ============================================================================
def test_a_key_routes_in_the_callers_language_and_tells_the_agent_in_danish(english):
    d = english.on_digit("3")
    assert d.say.startswith("I am putting you through to the elder care office.")
    assert (d.action, d.intent, d.confidence, d.forvaltning, d.hand_off) == (
        "route", "elder_care", 1.0, "SUF", True,
    )  # fmt: skip
    assert d.explanation == ["tast 3: hjælp til ældre over 65"] and d.reason == "keypad 3"
    assert english.state is State.DONE


def test_zero_is_the_callers_own_certain_choice_of_a_person(policy):
    d = policy.on_digit("0")
    assert (d.action, d.intent, d.confidence, d.forvaltning) == (
        "human", "human_agent", 1.0, "KONTAKTCENTER",
    )  # fmt: skip
    assert d.reason == "pressed 0" and d.say == DANISH_HUMAN


def test_a_key_the_menu_does_not_have_counts_as_not_understood(policy):
    d = policy.on_digit("7")
    assert (d.action, d.reason, d.intent, d.confidence) == ("rephrase", "unknown key", None, 0.0)
    assert policy.on_digit("8").action == "keypad_menu"


# == silence ===============================================================================
def test_silence_once_asks_if_the_caller_is_there(policy):
    d = policy.on_no_input()
    assert (d.action, d.reason) == ("no_input", "caller silent")
    assert d.say.startswith("Er du der stadig?")


def test_silence_twice_reaches_a_person_with_no_confidence(policy):
    policy.on_no_input()
    d = policy.on_no_input()
    assert (d.action, d.intent, d.confidence, d.reason) == (
        "human", "human_agent", 0.0, "no answer from the caller twice",
    )  # fmt: skip


def test_speaking_between_two_silences_starts_the_count_again(policy):
    policy.on_no_input()
    policy.on_utterance("øh", u("out_of_scope", 0.2))
    assert policy.on_no_input().action == "no_input"


def test_a_key_pressed_between_two_silences_starts_the_count_again(policy):
    # A caller who answered "Er du der stadig?" with a key was handed off as "no answer
    # from the caller twice" at the next pause.
    policy.on_no_input()
    assert policy.on_digit("7").action == "rephrase"
    d = policy.on_no_input()
    assert (d.action, d.hand_off) == ("no_input", False)


# == switching language ====================================================================
def test_saying_a_languages_name_switches_the_call_to_it(policy):
    d = policy.on_utterance("English.", u("out_of_scope", 0.2))
    assert (d.action, d.language, d.reason) == ("language", "en", "caller said 'English.'")
    assert d.say == "We will go on in English. Please tell me briefly why you are calling."
    assert not d.hand_off


def test_pressing_a_languages_key_switches_the_call_to_it(policy):
    d = policy.on_digit("9")
    assert (d.action, d.language, d.reason) == ("language", "en", "pressed 9")


def test_failures_in_the_wrong_language_no_longer_count_after_a_switch(policy):
    policy.on_utterance("øh", u("out_of_scope", 0.2))
    policy.on_utterance("på engelsk", u("out_of_scope", 0.2))
    assert policy.on_utterance("uh", u("out_of_scope", 0.2)).action == "rephrase"


def test_naming_the_language_already_spoken_keeps_the_failures(policy):
    policy.on_utterance("øh", u("out_of_scope", 0.2))
    d = policy.on_utterance("dansk", u("out_of_scope", 0.2))
    assert d.say == "Vi fortsætter på dansk. Fortæl mig kort, hvad du ringer om."
    assert policy.on_utterance("øh", u("out_of_scope", 0.2)).action == "keypad_menu"


def test_a_switch_during_a_confirm_question_drops_the_question(policy):
    asked(policy, "waste")
    policy.on_utterance("english", u("out_of_scope", 0.2))
    assert policy.state is State.LISTENING
    d = policy.on_utterance("yes", u("out_of_scope", 0.2))
    assert d.action == "rephrase" and not d.hand_off  # no question is open to say yes to


# == greetings =============================================================================
@pytest.mark.parametrize(
    "greeting",
    ["Goddag.", "godmorgen", "hallo hallo", "uh hi there", "øh hej med dig", "hej hej hej hej"],
)
def test_a_greeting_alone_waits_for_the_errand_without_a_failure(policy, greeting):
    d = policy.on_utterance(greeting, u("out_of_scope", 0.9))
    assert (d.action, d.say, d.reason) == ("listen", "", "greeting only")
    assert policy.failures == 0 and policy.state is State.LISTENING


@pytest.mark.parametrize("greeting", ["Good morning.", "good afternoon", "uh good evening"])
def test_an_english_good_morning_alone_is_a_greeting_too(policy, greeting):
    # It was answered with "Sorry, I did not quite understand" while the errand was still to
    # come: "good", "morning", "afternoon" were greeting words, but none a salutation.
    assert policy.on_utterance(greeting, u("out_of_scope", 0.9)).action == "listen"


@pytest.mark.parametrize("turn", ["hej hej hej hej hej", "øh ja", "hej min skraldespand", ""])
def test_a_turn_that_is_more_or_less_than_a_greeting_is_understood(policy, turn):
    assert policy.on_utterance(turn, u("out_of_scope", 0.9)).action == "rephrase"


# == what the logs and the console receive =================================================
def test_a_decision_reports_its_grounds_with_the_confidence_rounded(policy):
    d = policy.on_utterance("skrald", u("waste", 0.912345, rule="skrald", explanation=["skrald"]))
    assert d.as_dict() == {
        "action": "route", "intent": "waste", "confidence": 0.9123, "forvaltning": "TMF",
        "explanation": ["skrald"], "reason": "skrald", "emergency_notice": False,
    }  # fmt: skip


def test_an_errand_the_catalogue_marks_clarify_is_never_acted_on(catalogue, classifier):
    """`action: clarify` means "ask again", for any intent the catalogue gives it to."""
    edited = catalogue.model_copy(deep=True)
    edited.intents["building"].action = Action.CLARIFY
    policy = make(edited, classifier)
    d = policy.on_utterance("min carport", u("building", 0.95, explanation=["carport"]))
    assert (d.action, d.reason, d.intent, d.hand_off) == ("rephrase", "clarify", "building", False)
    assert policy.state is State.LISTENING


def test_an_errand_the_catalogue_hands_to_a_person_goes_to_its_forvaltnings_person(catalogue):
    """`action: human` on a matter: a person in its own forvaltning takes it, told what it is."""
    edited = catalogue.model_copy(deep=True)
    edited.intents["social_services"].action = Action.HUMAN
    policy = make(edited, heard_as(NOTHING))
    d = policy.on_utterance("min socialrådgiver", u("social_services", 0.9))
    assert (d.action, d.intent, d.forvaltning) == ("human", "social_services", "SOF")
    assert d.reason == "caller asked for a person"


def test_zero_reaches_the_forvaltning_the_catalogue_names_for_it(catalogue):
    edited = catalogue.model_copy(deep=True)
    edited.keypad["0"].forvaltning = "KFF"  # a municipality whose 0 is Borgerservice
    d = make(edited, heard_as(NOTHING)).on_digit("0")
    assert (d.action, d.forvaltning) == ("human", "KFF")


def test_wrong_keys_three_times_reach_a_person(policy):
    assert [policy.on_digit("7").action for _ in range(3)] == ["rephrase", "keypad_menu", "human"]
    assert policy.state is State.DONE


def test_a_turn_given_without_its_understanding_is_understood_by_the_policys_classifier(
    catalogue,
):
    policy = make(catalogue, heard_as(NOTHING, **{"min skraldespand": u("waste", 0.9)}))
    assert policy.on_utterance("min skraldespand").forvaltning == "TMF"


def test_thanks_after_an_answer_is_goodbye_whatever_the_model_reads_into_it(catalogue):
    policy = make(catalogue, heard_as(u("building", 0.9)))  # "tak for det": a building?
    policy.on_utterance("pas", u("passport", 0.9))
    assert policy.on_utterance("tak for det", u("building", 0.9)).action == "goodbye"


def test_a_no_on_the_last_try_hands_off_with_what_the_reply_sounded_like(catalogue):
    # No retries left: the denial hands the call over, to the contact centre, with what the
    # reply sounded like for the agent (a 0.3 guess is no reason for the passport queue).
    policy = make(catalogue, heard_as(NOTHING), max_retries=0)
    asked(policy, "waste")
    d = policy.on_utterance("nej noget med mit pas", u("passport", 0.3))
    assert (d.action, d.intent, d.forvaltning, d.confidence) == (
        "human",
        "passport",
        "KONTAKTCENTER",
        0.3,
    )
