import pytest

from voicebot.privacy import CPR_MASK, NUMBER_MASK, mask_numbers


@pytest.mark.parametrize("text", [
    "mit cpr-nummer er 230590-1234",
    "cpr 2305901234 tak",
    "det er 23 05 90 12 34",
    "to tre nul fem ni nul en to tre fire",
    "treogtyve nul fem halvfems tolv fireogtredive",
    "fem og tyve nul fem halvfems tolv fireogtredive",
    "23 05 90 bindestreg 12 34",
])  # fmt: skip
def test_cpr_numbers_written_or_spoken_are_masked(text):
    masked = mask_numbers(text)
    assert CPR_MASK in masked
    assert not any(ch.isdigit() for ch in masked)
    for word in ("nul", "fireogtredive", "halvfems"):
        assert word not in masked


@pytest.mark.parametrize("text", [
    "ring til mig på 12 34 56 78",
    "mit nummer er tolv fireogtredive seksoghalvtreds otteoghalvfjerds",
    "+45 12345678",
    "en to tre fire fem seks syv otte",
])  # fmt: skip
def test_phone_numbers_are_masked(text):
    assert NUMBER_MASK in mask_numbers(text)


@pytest.mark.parametrize("text", [
    "mit pas udløb for 3 uger siden",
    "min søn er 12 år og bor på Amager",
    "jeg har to børn i børnehave",
    "ring 112",
    "det koster 890 kr",
])  # fmt: skip
def test_ordinary_numbers_are_kept(text):
    assert mask_numbers(text) == text
