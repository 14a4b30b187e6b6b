import logging

import pytest
from uvicorn.logging import AccessFormatter

from voicebot.privacy import CPR_MASK, NUMBER_MASK, install_log_masking, mask_log_text, mask_numbers


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


# == CPR numbers the recogniser garbled or the caller said in parts (issue 13, #7) ==========
@pytest.mark.parametrize("text", [
    "CPR Nero 1 Nero 2 Nero 3-1234",
    "nero 1, nero 2, nero 3, 1, 2, 3, 4",
    "mit cpr nummer er null et to null tre fire fem seks syv otte",
    "social security number one two three four five six seven eight nine zero",
])  # fmt: skip
def test_cpr_numbers_with_garbled_zeros_or_english_digits_are_masked(text):
    masked = mask_numbers(text)
    assert CPR_MASK in masked and not any(ch.isdigit() for ch in masked)
    for word in ("nero", "null", "three", "fem"):
        assert word not in masked.lower()


@pytest.mark.parametrize("text", [
    "mit CPR-nummer er 120345, og de sidste fire er 1234",
    "personnummer 12 03 45 øh hvad var det nu 12 34",
    "CPR nummeret er 1203 hvad 45 1234",
    "mit person nummer det er en to nul tre fire fem øh en to tre fire",
    "min fødselsdato er 12 03 45",
    "de sidste fire er 1234",
    "de fire sidste cifre er en to tre fire",
    "12 03 45 12 hvad 34 er mit cpr",
])  # fmt: skip
def test_digits_near_a_cpr_cue_are_masked(text):
    masked = mask_numbers(text)
    assert CPR_MASK in masked and not any(ch.isdigit() for ch in masked)
    for word in ("nul", "to tre"):
        assert word not in masked


@pytest.mark.parametrize("text", [
    "det er 120345 og så 1234",
    "øh 120345 hvad 1234",  # one digit heard as a word: 6 + 4 around it
    "12034 øh 1234",  # a digit dropped
    "12 03 45 og så en to tre fire",
])  # fmt: skip
def test_a_cpr_number_said_in_two_parts_is_masked(text):
    masked = mask_numbers(text)
    assert masked.count(CPR_MASK) == 2 and not any(ch.isdigit() for ch in masked)


@pytest.mark.parametrize("text", [
    "jeg er 85 år",
    "klokken 10",
    "bus 5A kører ikke",
    "jeg bor på Nørrebrogade 45, 3. tv",
    "den 12. marts",
    "jeg er født 120345",  # a date alone
    "mødet er den 12/3 klokken 14 30",
    "jeg har 2 børn på 4 og 6 år",
    "vi er nummer 17 i køen",
    "jeg har fået CPR nummer men ingen gult kort",
    "hvordan ændrer jeg adresse i CPR registret",
    "jeg har fået et CPR nummer men skal skifte adresse",
    "jeg har 2 børn og mangler cpr nummer til dem",
    "de sidste fire uger har jeg ventet",
    "regningen var på 30.000 men nu 10.000",
    "det koster 12.000 og så 1.500",
    "jeg bor i 2300 og så 12345",
])  # fmt: skip
def test_ordinary_speech_with_numbers_or_cue_words_is_kept(text):
    assert mask_numbers(text) == text


def test_numbers_after_a_whole_cpr_number_are_kept():
    masked = mask_numbers("mit cpr nummer er 120345 1234 og jeg er 85 år")
    assert masked == f"mit cpr nummer er {CPR_MASK} og jeg er 85 år"


def test_a_phone_number_near_a_cpr_cue_stays_a_phone_number():
    masked = mask_numbers("cpr nummer 120345 1234 og telefon 12 34 56 78")
    assert masked == f"cpr nummer {CPR_MASK} og telefon {NUMBER_MASK}"


# == logs: secrets, caller numbers and forged lines (issue 13 #16, issue 19) ====================
@pytest.mark.parametrize(("line", "secret"), [
    ("GET /twilio/voice?api_key=k3y-v4lue-0123 HTTP/1.1", "k3y-v4lue-0123"),
    ("GET /hook?apikey=k3y-v4lue-0123&x=1", "k3y-v4lue-0123"),
    ("GET /raw?signature=c2lnbmF0dXJlLXZhbHVl&call=1", "c2lnbmF0dXJlLXZhbHVl"),
    ("POST /console/login password=hunter2-hunter2", "hunter2-hunter2"),
    ("header Authorization: Basic dXNlcjpodW50ZXIyaHVudGVy", "dXNlcjpodW50ZXIyaHVudGVy"),
    ("header authorization: basic dXNlcjpodW50ZXIyaHVudGVy", "dXNlcjpodW50ZXIyaHVudGVy"),
    ("ws://h/calls/x/events?token=abcdefghijk123", "abcdefghijk123"),
    ("settings twilio_auth_token=abcdefghijk123 loaded", "abcdefghijk123"),
    ("headers {'x-api-key': 'k3y-v4lue-0123', 'host': 'h'}", "k3y-v4lue-0123"),
    ("X-Twilio-Signature: c2lnbmF0dXJlLXZhbHVl=", "c2lnbmF0dXJlLXZhbHVl"),
    ('body {"password": "hunter2-hunter2"}', "hunter2-hunter2"),
    ("connecting to redis://:hunter2-hunter2@10.0.0.5:6379/0", "hunter2-hunter2"),
])  # fmt: skip
def test_each_kind_of_secret_is_hidden_in_logs(line, secret):
    masked = mask_log_text(line)
    assert secret not in masked and "[SKJULT]" in masked


def test_log_masking_keeps_what_is_not_a_secret():
    line = "refused an event stream for call CA12 to 10.0.0.1:5000: token missing or wrong"
    assert mask_log_text(line) == line
    assert (
        mask_log_text('signature-input: sig1=("@authority")')
        == 'signature-input: sig1=("@authority")'
    )


@pytest.mark.parametrize("path", [
    "/raw?caller=%2B4512345678",
    "/twilio/voice?From=%2B45%2012%2034%2056%2078&To=%2B4580808080",
    "/raw?caller=%2b4512345678&x=1",
    "/raw?caller=+45+12+34+56+78",
])  # fmt: skip
def test_a_url_encoded_caller_number_is_masked_in_the_access_log(path):
    install_log_masking()
    record = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:50000", "GET", path, "1.1", 200),
        None,
    )
    line = AccessFormatter(
        '%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    ).format(record)
    assert NUMBER_MASK in line
    assert "12345678" not in line and "45%2012" not in line and "+45+12" not in line
    assert line.startswith('127.0.0.1:50000 - "GET /') and line.endswith('HTTP/1.1" 200 OK')


@pytest.mark.parametrize("forged", [
    "/x\nINFO voicebot.app: call CA1 routed to TMF",
    "/x\r\nINFO forged",
    "/x\x1b[2K\rINFO forged",
    "/x\x85INFO forged",
    "/x\u2028INFO forged",
])  # fmt: skip
def test_control_characters_cannot_forge_log_lines(forged, caplog):
    install_log_masking()
    log = logging.getLogger("voicebot.test")
    with caplog.at_level(logging.INFO, logger="voicebot.test"):
        log.warning("refused %s from %s: X-Twilio-Signature missing or wrong", forged, "10.0.0.1")
        log.warning("protocol error: %s", ValueError(forged))  # not text: the message is cleaned
        log.warning(f"an f-string with {forged}")  # noqa: G004 - what careless code does
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    for message in messages:
        assert "INFO" in message and not any(
            ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in message
        )
        assert "\\" in message  # written as an escape, not dropped


def test_access_log_args_keep_their_shape_when_escaped():
    install_log_masking()
    record = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:50000", "GET", "/a\x85b\x1bc", "1.1", 404),
        None,
    )
    line = AccessFormatter(
        '%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    ).format(record)
    assert line == '127.0.0.1:50000 - "GET /a\\x85b\\x1bc HTTP/1.1" 404 Not Found'
