"""Which credentials are taken and which signatures are refused, and why: the bearer token's
three places, the URL variants Twilio's signature may be made over, the structured-field
parser under AudioHook's signatures (RFC 8941, the part signatures use) and each refusal of
an AudioHook signature, with a signer that signs whatever a test asks for."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from telephony import auth
from telephony.auth import SignatureError

# == bearer tokens =============================================================================


def basic(userinfo: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(userinfo.encode()).decode()}


@pytest.mark.parametrize(("headers", "query", "token"), [
    ({"authorization": "Bearer  t0k3n "}, "", "t0k3n"),  # extra spaces around the token
    ({"authorization": "bearer t0k3n"}, "token=other", "t0k3n"),  # the header wins
    (basic("asterisk:pa:ss"), "", "pa:ss"),  # the password is everything after the first colon
    (basic("asterisk:"), "token=q", None),  # Basic without a password presents none
    ({"authorization": "Digest abc"}, "x=1&token=q", "q"),  # another scheme: the query decides
    ({"authorization": "Bearer "}, "token=q", "q"),
    ({}, "token=", None),
    ({}, "tokens=q&xtoken=q", None),
])  # fmt: skip
def test_the_presented_token(headers, query, token):
    assert auth.presented_token(headers, query) == token


@pytest.mark.parametrize("value", ["Basic !!!!", "Basic dXNlcjpwYXNz!!", "Basic //79"])
def test_basic_credentials_that_are_not_base64_text_present_no_token(value):
    assert auth.presented_token({"authorization": value}, "token=q") is None


def test_the_token_is_stripped_from_a_query_that_is_logged():
    assert auth.strip_token("a=1&token=s3cr3t&b=2&&") == "a=1&b=2"
    assert auth.strip_token("xtoken=1&token=") == "xtoken=1"


def test_a_derived_token_opens_one_purpose():
    token = auth.derive_token("s", "media:twilio")
    assert token == hmac.new(b"s", b"media:twilio", hashlib.sha256).hexdigest()
    creds = auth.Credentials("s", configured={"vonage": "v"}, client_secrets={"audiohook": "c"})
    assert creds.token("vonage") == "v" and creds.token("twilio") == token
    assert creds.audiohook_api_key == auth.derive_token("s", "media:audiohook")
    assert creds.audiohook_client_secret == "c" and creds.client_secret("twilio") is None
    assert creds.softphone_token == auth.derive_token("s", auth.SOFTPHONE_PURPOSE)


def test_empty_credentials_never_match():
    assert not auth.equal("", "") and not auth.equal(None, "x") and not auth.equal("x", None)
    assert auth.equal("x", "x") and not auth.equal("x", "y")


# == Twilio's URL variants =====================================================================
@pytest.mark.parametrize(("url", "variants"), [
    ("https://h.dk/v?a=1", ["https://h.dk/v?a=1", "https://h.dk:443/v?a=1"]),
    ("wss://h.dk:443/t", ["wss://h.dk:443/t", "wss://h.dk/t"]),
    ("http://h.dk/x#f", ["http://h.dk/x#f", "http://h.dk:80/x#f"]),
    ("ws://u:p@H.dk/x", ["ws://u:p@H.dk/x", "ws://u:p@h.dk/x", "ws://u:p@h.dk:80/x"]),
    ("https://[::1]/x", ["https://[::1]/x", "https://[::1]:443/x"]),
    ("https://h.dk:8443/x", ["https://h.dk:8443/x"]),  # another port is another URL
    ("ftp://h.dk/x", ["ftp://h.dk/x"]),
])  # fmt: skip
def test_url_variants_add_and_remove_the_default_port_only(url, variants):
    assert auth.url_variants(url) == variants


def test_twilio_signs_each_repeated_parameter_value_in_order():
    params = [("b", "2"), ("a", "y"), ("a", "x"), ("a", "x")]
    data = b"https://h.dk/vaxayb2"
    expected = base64.b64encode(hmac.new(b"tok", data, hashlib.sha1).digest()).decode()
    assert auth.twilio_signature("tok", "https://h.dk/v", params) == expected
    assert auth.verify_twilio("tok", expected, ["https://h.dk:443/v"], iter(params))
    assert not auth.verify_twilio("tok", "", ["https://h.dk/v"], params)


# == the structured-field parser (RFC 8941) ====================================================
def parse(text: str) -> dict[str, object]:
    return dict(auth._Parser(text).dictionary())


def test_a_signature_input_dictionary_is_parsed_into_lists_and_parameters():
    parsed = parse(
        ' \tsig1=("@authority" "x-api-key");created=-12;keyid="k";nonce=:aGk=:;f=?0;t=?1;b;'
        " alg=hmac-sha256 ,\tsig2=:aGVsbG8=:;x=*tok, flag"
    )
    assert parsed == {
        "sig1": (
            [("@authority", []), ("x-api-key", [])],
            [("created", -12), ("keyid", "k"), ("nonce", b"hi"), ("f", False), ("t", True),
             ("b", True), ("alg", "hmac-sha256")],
        ),
        "sig2": (b"hello", [("x", "*tok")]),
        "flag": (True, []),
    }  # fmt: skip


def test_strings_take_their_escapes():
    assert parse(r'a="q\"b\\s ~"') == {"a": ('q"b\\s ~', [])}
    assert parse('a=( "x";p=1  "y" )') == {"a": ([("x", [("p", 1)]), ("y", [])], [])}
    assert parse("a=()") == {"a": ([], [])}
    assert parse("a=::") == {"a": (b"", [])}
    assert parse("a=(X)") == {"a": ([("X", [])], [])}  # a token, not something to skip
    assert parse("") == {} and parse(" \t ") == {}


def test_an_integer_has_at_most_fifteen_digits():
    assert parse("a=123456789012345") == {"a": (123456789012345, [])}
    with pytest.raises(SignatureError, match="malformed dictionary"):
        parse("a=1234567890123456")


@pytest.mark.parametrize(("text", "why"), [
    ('a="abc', "unterminated string"),
    ('a="ab\\', "bad escape in string"),
    ('a="a\\nb"', "bad escape in string"),
    ('a="tab\there"', "non-printable character in string"),
    ('a="é"', "non-printable character in string"),
    ("a=:aGk=", "unterminated byte sequence"),
    ("a=:a*k=:", "byte sequence is not base64"),
    ("a=:aGk=!:", "byte sequence is not base64"),
    ("a=?2", "bad boolean"),
    ("a=?", "bad boolean"),
    ("a=-", "malformed structured field at 2"),
    ("a=1.5", "malformed dictionary"),
    ("A=1", "malformed structured field at 0"),
    ("a=(x,y)", "malformed inner list"),
    ('a=("x""y")', "malformed inner list"),
    ("a=(x", "malformed inner list"),
    ("a=1;", "malformed structured field at 4"),
    ("a=1 b=2", "malformed dictionary"),
    ("a=1,", "trailing comma"),
    ("a=1,  ", "trailing comma"),
    ("a=1;B=2", "malformed structured field"),
    ("a=é", "malformed structured field"),
    ("Xa=1", "malformed structured field at 0"),
    ("a=1,Xb=2", "malformed structured field at 4"),
    ("a=1 X", "malformed dictionary"),
])  # fmt: skip
def test_malformed_structured_fields_are_refused_saying_why(text, why):
    with pytest.raises(SignatureError, match=f"^{why}"):
        parse(text)


def test_the_parser_is_bounded():
    inner = "(" + " ".join(f'"h{i}"' for i in range(32)) + ")"
    assert len(parse(f"a={inner}")["a"][0]) == 32  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="^too many components"):
        parse("a=(" + " ".join(f'"h{i}"' for i in range(33)) + ")")
    assert len(parse(",".join(f"k{i}=1" for i in range(8)))) == 8
    with pytest.raises(SignatureError, match="^too many signatures"):
        parse(",".join(f"k{i}=1" for i in range(9)))
    longest = "a=" + '"' + "x" * (auth.MAX_SIGNATURE_HEADER - 4) + '"'
    assert parse(longest)["a"] == ("x" * (auth.MAX_SIGNATURE_HEADER - 4), [])
    with pytest.raises(SignatureError, match="^signature header too long"):
        parse(longest + " ")


def test_values_serialize_as_a_signer_writes_them():
    params = [("a", True), ("b", False), ("n", -3), ("s", 'q"\\'), ("x", b"hi")]
    assert auth._serialize_bare(True) == "?1" and auth._serialize_bare(False) == "?0"
    assert auth._serialize_params(params) == ';a;b=?0;n=-3;s="q\\"\\\\";x=:aGk=:'
    assert parse("k=1" + auth._serialize_params(params))["k"] == (1, params)


# == AudioHook signatures: each refusal ========================================================
SECRET = base64.b64encode(b"k" * 32).decode()
KEY = "api-key-of-the-org"
NOW = 1_700_000_000
NONCE = "n" * auth.MIN_NONCE_CHARS
HEADERS = {
    "audiohook-organization-id": "org",
    "audiohook-session-id": "session",
    "audiohook-correlation-id": "corr",
    "x-api-key": KEY,
}
ALL = '"@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" "audiohook-correlation-id" "x-api-key"'  # noqa: E501


def signed(
    components: str = ALL,
    params: str = f';keyid="{KEY}";nonce="{NONCE}";alg="hmac-sha256";created={NOW}',
    headers: dict[str, str] | None = None,
    authority: str = "bot.dk",
    target: str = "/audiohook",
    label: str = "sig1",
) -> dict[str, str]:
    """Headers signed as a signer would over exactly `components` and `params`."""
    headers = dict(HEADERS if headers is None else headers)
    parsed = auth._Parser(f"s=({components}){params}").dictionary()["s"]
    names = [str(name) for name, _ in parsed[0]]  # type: ignore[union-attr]
    values = {**dict.fromkeys(names, ""), "@request-target": target, "@authority": authority}
    values.update(headers)
    base = auth.signature_base(names, parsed[1], values)
    digest = hmac.new(base64.b64decode(SECRET), base.encode(), hashlib.sha256).digest()
    return {
        **headers,
        "signature-input": f"{label}=({components}){params}",
        "signature": f"{label}=:{base64.b64encode(digest).decode()}:",
    }


def check(headers: dict[str, str], now: float = NOW, authorities: tuple[str, ...] = ("bot.dk",)):
    auth.verify_audiohook_signature(headers, "/audiohook", authorities, KEY, SECRET, now=now)


def test_a_signature_made_as_genesys_makes_it_is_accepted():
    check(signed())
    check(signed(authority="bot.dk:443"), authorities=("", "BOT.dk:443", "bot.dk"))
    check(signed(params=f';keyid="{KEY}";nonce="{NONCE}";created={NOW};expires={NOW + 10}'))
    check(signed(), now=NOW + auth.MAX_AGE_S + auth.CLOCK_SKEW_S)  # the last moment
    check(signed(), now=NOW - auth.CLOCK_SKEW_S)
    two = signed()
    two["signature"] = "other=:AAAA:, " + two["signature"]  # the label picks the signature
    check(two)
    folded = signed()
    folded["signature-input"] = folded["signature-input"].replace(
        '"@authority" ', '"@authority"\r\n\t'
    )
    check(folded)  # a folded header line is unfolded into one space
    folded["signature-input"] = folded["signature-input"].replace(";keyid", "\r\n ;keyid")
    with pytest.raises(SignatureError, match="malformed dictionary"):
        check(folded)  # and a space is not allowed before ";"


P = f';keyid="{KEY}";nonce="{NONCE}"'
B64_NONCE = base64.b64encode(NONCE.encode()).decode()


@pytest.mark.parametrize(("headers", "why"), [
    ({**signed(), "signature-input": ""}, "the upgrade is not signed"),
    ({**signed(), "signature": " "}, "the upgrade is not signed"),
    ({**signed(), "signature": "sig2=:AAAA:"}, "no signature labelled 'sig1'"),
    ({**signed(), "signature": "sig1=(:AAAA:)"}, "no signature labelled"),
    ({**signed(), "signature-input": 'sig1="@authority"'}, "Signature-Input member is not an inner list$"),
    (signed(components=ALL + ' "x-api-key"'), "component 'x-api-key' listed twice"),
    (signed(components=ALL.replace('"x-api-key"', '"x-api-key";sf')), "components must be plain strings without parameters"),
    (signed(components=ALL + " 7"), "components must be plain strings without parameters"),
    (signed(components=ALL + ' "@bogus"'), "unknown derived component '@bogus'"),
    (signed(components=ALL + ' "@method"'), "cannot check derived component '@method'"),
    (signed(components=ALL.replace('"@authority" ', "")), "the signature does not cover @authority$"),
    (signed(components=ALL.replace('"@authority" ', "").replace(' "x-api-key"', "")), "the signature does not cover @authority, x-api-key$"),
    (signed(params=P + f";created={NOW};tag=1"), "unexpected signature parameter 'tag'"),
    (signed(params=P + f";created={NOW};created={NOW}"), "unexpected signature parameter"),
    (signed(params=P + f';created={NOW};alg="hmac-sha512"'), "algorithm 'hmac-sha512' is not hmac-sha256"),
    (signed(params=P), "no 'created' time"),
    (signed(params=P + ";created=?1"), "no 'created' time"),
    (signed(params=P + f';created="{NOW}"'), "no 'created' time"),
    (signed(params=P + f";created={NOW + 4}"), "the signature was created in the future"),
    (signed(params=P + f";created={NOW - 14}"), "the signature is too old"),
    (signed(params=P + f";created={NOW};expires={NOW - 4}"), "the signature has expired"),
    (signed(params=P + f';created={NOW};expires="{NOW + 9}"'), "the signature has expired"),
    (signed(params=f';keyid="{KEY}";nonce="{"n" * 21}";created={NOW}'), r"no nonce \(or one too short\) in the signature"),
    (signed(params=f';keyid="{KEY}";nonce=:{B64_NONCE}:;created={NOW}'), r"no nonce \(or one too short\) in the signature"),
    (signed(params=f';keyid="{KEY}";created={NOW}'), r"no nonce \(or one too short\) in the signature"),
    (signed(params=f';nonce="{NONCE}";created={NOW}'), "the signature's keyid is not the X-API-KEY"),
    (signed(params=f';keyid=:aGk=:;nonce="{NONCE}";created={NOW}'), "the signature's keyid is not the X-API-KEY"),
    (signed(params=f';keyid="other";nonce="{NONCE}";created={NOW}'), "the signature's keyid is not the X-API-KEY"),
    (signed(components=ALL + ' "x-extra"'), "header 'x-extra' is signed but absent"),
    (signed(authority="evil.dk"), "the signature does not match"),
    (signed(target="/other"), "the signature does not match"),
    (signed(headers={**HEADERS, "x-api-key": "other"}, params=f';keyid="other";nonce="{NONCE}";created={NOW}'), "unknown X-API-KEY"),  # noqa: E501
])  # fmt: skip
def test_each_refusal_says_why(headers, why):
    with pytest.raises(SignatureError, match=f"^{why}"):
        check(headers)


def test_an_unsigned_upgrade_is_told_which_headers_are_missing():
    with pytest.raises(SignatureError) as refused:
        check({**signed(), "signature": ""})
    assert str(refused.value) == (
        "the upgrade is not signed (Signature-Input and Signature headers)"
    )


def test_the_time_window_is_measured_with_the_allowed_clock_skew():
    with pytest.raises(SignatureError, match="^the signature was created in the future"):
        check(signed(), now=NOW - auth.CLOCK_SKEW_S - 1)
    with pytest.raises(SignatureError, match="^the signature is too old"):
        check(signed(), now=NOW + auth.MAX_AGE_S + auth.CLOCK_SKEW_S + 1)
    late = signed(params=P + f";created={NOW};expires={NOW + 2}")
    check(late, now=NOW + 2 + auth.CLOCK_SKEW_S)
    with pytest.raises(SignatureError, match="^the signature has expired"):
        check(late, now=NOW + 2 + auth.CLOCK_SKEW_S + 1)


def test_a_client_secret_that_is_not_base64_is_a_configuration_error():
    with pytest.raises(SignatureError, match="^security.audiohook_client_secret is not base64"):
        auth.verify_audiohook_signature(signed(), "/audiohook", ["bot.dk"], KEY, "!!", now=NOW)


def test_a_nonce_is_accepted_once_within_the_window_and_the_cache_is_bounded():
    nonces = auth.NonceCache(max_entries=2)
    assert nonces.fresh("a", 100.0) and not nonces.fresh("a", 101.0)
    assert nonces.fresh("b", 101.0) and nonces.fresh("c", 102.0)  # "a" makes room
    assert len(nonces._seen) <= 2  # never more than max_entries
    assert nonces.fresh("a", 103.0) and not nonces.fresh("a", 103.5)
    window = auth.MAX_AGE_S + 2 * auth.CLOCK_SKEW_S
    later = auth.NonceCache()
    assert later.fresh("x", 0.0) and not later.fresh("x", window)
    assert later.fresh("x", window + 0.5)  # past every signature's lifetime: forgotten
    cache = auth.NonceCache()
    for nonce in ("a" * 22, "b" * 22):  # two connections, two nonces: both are fresh
        headers = signed(params=f';keyid="{KEY}";nonce="{nonce}";created={NOW}')
        auth.verify_audiohook_signature(
            headers, "/audiohook", ["bot.dk"], KEY, SECRET, now=NOW, nonces=cache
        )
    with pytest.raises(
        SignatureError, match=r"^the signature's nonce was used before \(a replay\)"
    ):
        cache = auth.NonceCache()
        headers = signed()
        auth.verify_audiohook_signature(
            headers, "/audiohook", ["bot.dk"], KEY, SECRET, now=NOW, nonces=cache
        )
        auth.verify_audiohook_signature(
            headers, "/audiohook", ["bot.dk"], KEY, SECRET, now=NOW, nonces=cache
        )


def test_the_signer_and_the_request_target():
    made = auth.sign_audiohook(
        {"Audiohook-Organization-Id": "org", "Audiohook-Session-Id": "session",
         "Audiohook-Correlation-Id": "corr", "X-API-KEY": KEY},
        "/audiohook", "BOT.dk", KEY, SECRET, now=NOW, nonce=NONCE,
    )  # fmt: skip
    assert made["Signature-Input"] == (
        f'sig1=({ALL});keyid="{KEY}";nonce="{NONCE}";alg="hmac-sha256";'
        f"created={NOW};expires={NOW + 10}"
    )
    check({**HEADERS, "signature-input": made["Signature-Input"], "signature": made["Signature"]})
    assert auth.request_target("wss://h.dk") == "/"
    assert auth.request_target("wss://h.dk/a/b?x=1&y") == "/a/b?x=1&y"
    assert auth.request_target("wss://h.dk/a?") == "/a"
