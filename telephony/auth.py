"""Who may connect: the schemes by which platforms prove a connection comes from them, both
the check and the signing. Each platform module's `Platform` entry (telephony.platform) picks
its scheme for the gateway's check (voicebot.gateway) and for its caller side
(telephony.simulator), so `voicebot call` authenticates exactly as the platform would.

- Twilio: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + the POST parameters
  sorted by name, each name followed by its value)), on the media WebSocket upgrade (the wss://
  URL, no parameters) and on the webhooks. Twilio's documented algorithm; a known-answer test
  from Twilio's documentation is in tests/test_auth.py.
- Genesys AudioHook: `X-API-KEY`, and with a client secret the HTTP message signature
  (`Signature-Input`/`Signature`, hmac-sha256 keyed with the base64-decoded client secret over
  @request-target, @authority and the four Audiohook/X-API-KEY headers), as AudioHook's
  reference implementation verifies it (a draft of RFC 9421); its documented example is in
  tests/test_auth.py.
- Vonage, Telnyx, Asterisk chan_websocket, raw: a shared bearer token, in `Authorization:
  Bearer T` (or Basic with T as the password, as Asterisk's websocket_client.conf sends) or in
  the URL as `?token=T` for platforms that cannot set headers.
- AudioSocket has no authentication: source addresses (telephony.audiosocket).

Every platform credential not configured is derived from the master secret in data_dir/secret
(voicebot.secrets) for that platform alone: HMAC-SHA256(secret, "media:<platform>").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SOFTPHONE_PURPOSE = "softphone:raw"


def derive_token(secret: str, purpose: str) -> str:
    """A token for one purpose, derived from the shared secret: it opens that and nothing else."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def equal(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an empty or missing value never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Credentials:
    """The secrets of every media endpoint, as the server checks them and a platform signs.

    `secret` is the master secret (data_dir/secret): it opens the event streams and the queue
    API, never a media endpoint. Each platform's credential is the one configured for it, or
    else one derived from the master secret for that platform alone (`derive_token`), so a
    platform's credential opens its own endpoint and nothing else."""

    secret: str
    configured: Mapping[str, str] = field(default_factory=dict)  # platform → its own credential
    client_secrets: Mapping[str, str] = field(default_factory=dict)  # platform → a signing secret

    def token(self, platform: str) -> str:
        """The platform's credential: bearer token, Twilio auth token, AudioHook X-API-KEY."""
        return self.configured.get(platform) or derive_token(self.secret, f"media:{platform}")

    def client_secret(self, platform: str) -> str | None:
        return self.client_secrets.get(platform)

    @property
    def twilio_auth_token(self) -> str:
        return self.token("twilio")

    @property
    def audiohook_api_key(self) -> str:
        return self.token("audiohook")

    @property
    def audiohook_client_secret(self) -> str | None:
        return self.client_secret("audiohook")

    @property
    def softphone_token(self) -> str:
        return derive_token(self.secret, SOFTPHONE_PURPOSE)


# == Twilio ===================================================================================
def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """X-Twilio-Signature for a URL and its POST parameters (none for a WebSocket upgrade)."""
    by_name: dict[str, list[str]] = {}
    for name, value in params:
        by_name.setdefault(name, []).append(value)
    data = url + "".join(
        name + value for name in sorted(by_name) for value in sorted(set(by_name[name]))
    )
    return base64.b64encode(
        hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    ).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, with its default port added and removed: Twilio signs the URL as it
    was configured, and a proxy may or may not show the port."""
    parts = urlsplit(url)
    default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = userinfo + "@" if userinfo else ""
    variants = [url]
    if default is not None and (parts.port in (None, default)):
        for netloc in (prefix + host, f"{prefix}{host}:{default}"):
            variant = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
            if variant not in variants:
                variants.append(variant)
    return variants


def verify_twilio(
    auth_token: str,
    signature: str | None,
    urls: Iterable[str],
    params: Iterable[tuple[str, str]] = (),
) -> bool:
    if not signature:
        return False
    params = list(params)
    return any(
        equal(signature, twilio_signature(auth_token, variant, params))
        for url in urls
        for variant in url_variants(url)
    )


# == bearer tokens ============================================================================
def presented_token(headers: Mapping[str, str], query: str) -> str | None:
    """The token a connection presents: `Authorization: Bearer T`, Basic with T as the
    password, or `?token=T`."""
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(":")[2] or None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return value or None
    return None


def strip_token(query: str) -> str:
    """The query string without its token (what may be logged or passed on)."""
    return "&".join(p for p in query.split("&") if p and not p.startswith("token="))


# == Genesys AudioHook: HTTP message signatures ===============================================
AUDIOHOOK_COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
DERIVED = {"@request-target", "@authority", "@method", "@scheme", "@target-uri", "@path", "@query"}
MAX_AGE_S = 10.0  # a signature is made for one connection attempt
CLOCK_SKEW_S = 3.0
MIN_NONCE_CHARS = 22  # as AudioHook's reference server requires
MAX_SIGNATURE_HEADER = 4096


class SignatureError(ValueError):
    """A signature that is absent, malformed, expired or wrong; the message says which."""


_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*")
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INTEGER = re.compile(r"-?\d{1,15}")

# Structured-field values (RFC 8941) as the parser returns them.
BareItem = str | int | bool | bytes
Parameters = list[tuple[str, BareItem]]
InnerList = list[tuple[BareItem, Parameters]]


class _Parser:
    """The part of RFC 8941 structured fields that signatures use: dictionaries whose
    members are inner lists of strings or byte sequences, with parameters."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_SIGNATURE_HEADER:
            raise SignatureError("signature header too long")
        self.text, self.i = text, 0

    def _peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def _skip(self, chars: str = " ") -> None:
        while self._peek() and self._peek() in chars:
            self.i += 1

    def _match(self, pattern: re.Pattern[str]) -> str:
        m = pattern.match(self.text, self.i)
        if not m:
            raise SignatureError(f"malformed structured field at {self.i}")
        self.i = m.end()
        return m.group()

    def bare_item(self) -> BareItem:
        c = self._peek()
        if c == '"':
            out: list[str] = []
            self.i += 1
            while True:
                c = self._peek()
                if not c:
                    raise SignatureError("unterminated string")
                self.i += 1
                if c == "\\":
                    c = self._peek()
                    if c not in ('"', "\\"):
                        raise SignatureError("bad escape in string")
                    self.i += 1
                elif c == '"':
                    return "".join(out)
                elif not " " <= c <= "~":
                    raise SignatureError("non-printable character in string")
                out.append(c)
        if c == ":":
            end = self.text.find(":", self.i + 1)
            if end < 0:
                raise SignatureError("unterminated byte sequence")
            try:
                value = base64.b64decode(self.text[self.i + 1 : end], validate=True)
            except (binascii.Error, ValueError):
                raise SignatureError("byte sequence is not base64") from None
            self.i = end + 1
            return value
        if c == "?":
            self.i += 1
            flag = self._peek()
            if flag not in ("0", "1"):
                raise SignatureError("bad boolean")
            self.i += 1
            return flag == "1"
        if c == "-" or c.isdigit():
            return int(self._match(_INTEGER))
        return self._match(_TOKEN)

    def parameters(self) -> Parameters:
        params: Parameters = []
        while self._peek() == ";":
            self.i += 1
            self._skip()
            key = self._match(_KEY)
            value: BareItem = True
            if self._peek() == "=":
                self.i += 1
                value = self.bare_item()
            params.append((key, value))
        return params

    def member_value(self) -> tuple[BareItem | InnerList, Parameters]:
        if self._peek() == "(":
            self.i += 1
            items: InnerList = []
            while True:
                self._skip()
                if self._peek() == ")":
                    self.i += 1
                    break
                if len(items) >= 32:
                    raise SignatureError("too many components")
                items.append((self.bare_item(), self.parameters()))
                if self._peek() not in (" ", ")"):
                    raise SignatureError("malformed inner list")
            return items, self.parameters()
        return self.bare_item(), self.parameters()

    def dictionary(self) -> OrderedDict[str, tuple[BareItem | InnerList, Parameters]]:
        out: OrderedDict[str, tuple[BareItem | InnerList, Parameters]] = OrderedDict()
        self._skip(" \t")
        while self.i < len(self.text):
            key = self._match(_KEY)
            if self._peek() == "=":
                self.i += 1
                out[key] = self.member_value()
            else:
                out[key] = (True, self.parameters())
            self._skip(" \t")
            if self.i >= len(self.text):
                break
            if self._peek() != ",":
                raise SignatureError("malformed dictionary")
            self.i += 1
            self._skip(" \t")
            if self.i >= len(self.text):
                raise SignatureError("trailing comma")
            if len(out) >= 8:
                raise SignatureError("too many signatures")
        return out


def _serialize_bare(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_params(params: Parameters) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_serialize_bare(v)}" for k, v in params)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else re.sub(r"[ \t]*\r\n[ \t]+", " ", value.strip())


def signature_base(components: list[str], params: Parameters, values: Mapping[str, str]) -> str:
    """The signature base: one `"name": value` line per component, then @signature-params,
    re-serialized from the parsed form (so a signer must have been strict)."""
    lines = [f'"{name}": {values[name]}' for name in components]
    inner = "(" + " ".join(f'"{name}"' for name in components) + ")" + _serialize_params(params)
    lines.append(f'"@signature-params": {inner}')
    return "\n".join(lines)


class NonceCache:
    """Nonces seen within the signatures' lifetime: a captured upgrade cannot be replayed."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def fresh(self, nonce: str, now: float) -> bool:
        horizon = now - (MAX_AGE_S + 2 * CLOCK_SKEW_S)
        while self._seen and (
            next(iter(self._seen.values())) < horizon or len(self._seen) >= self._max
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def verify_audiohook_signature(
    headers: Mapping[str, str],
    request_target: str,
    authorities: Iterable[str],
    api_key: str,
    client_secret: str,
    now: float | None = None,
    nonces: NonceCache | None = None,
) -> None:
    """Check an AudioHook upgrade's HTTP message signature; raises SignatureError saying why.
    `headers` has lower-case names; `authorities` are the host[:port] values @authority may
    take (the Host header; the public URL's host behind a proxy)."""
    now = time.time() if now is None else now
    signature_input = _header(headers, "signature-input")
    signature = _header(headers, "signature")
    if not signature_input or not signature:
        raise SignatureError("the upgrade is not signed (Signature-Input and Signature headers)")
    inputs = _Parser(signature_input).dictionary()
    signatures = _Parser(signature).dictionary()
    if not inputs:
        raise SignatureError("empty Signature-Input")
    label, (items, params) = next(iter(inputs.items()))
    given = signatures[label][0] if label in signatures else None
    if not isinstance(given, bytes):
        raise SignatureError(f"no signature labelled {label!r}")
    if not isinstance(items, list):
        raise SignatureError("Signature-Input member is not an inner list")
    components: list[str] = []
    for name, component_params in items:
        if not isinstance(name, str) or component_params:
            raise SignatureError("components must be plain strings without parameters")
        if name in components:
            raise SignatureError(f"component {name!r} listed twice")
        if name.startswith("@") and name not in DERIVED:
            raise SignatureError(f"unknown derived component {name!r}")
        components.append(name)
    missing = [c for c in AUDIOHOOK_COMPONENTS if c not in components]
    if missing:
        raise SignatureError(f"the signature does not cover {', '.join(missing)}")
    p: dict[str, object] = {}
    for param, param_value in params:
        if param not in ("alg", "created", "expires", "keyid", "nonce") or param in p:
            raise SignatureError(f"unexpected signature parameter {param!r}")
        p[param] = param_value
    if p.get("alg", "hmac-sha256") != "hmac-sha256":
        raise SignatureError(f"algorithm {p.get('alg')!r} is not hmac-sha256")
    created, expires = p.get("created"), p.get("expires")
    if not isinstance(created, int) or isinstance(created, bool):
        raise SignatureError("no 'created' time in the signature")
    if created > now + CLOCK_SKEW_S:
        raise SignatureError("the signature was created in the future")
    if created < now - MAX_AGE_S - CLOCK_SKEW_S:
        raise SignatureError("the signature is too old")
    if expires is not None and (not isinstance(expires, int) or expires < now - CLOCK_SKEW_S):
        raise SignatureError("the signature has expired")
    nonce = p.get("nonce")
    if not isinstance(nonce, str) or len(nonce) < MIN_NONCE_CHARS:
        raise SignatureError("no nonce (or one too short) in the signature")
    if not isinstance(p.get("keyid"), str) or not equal(
        str(p["keyid"]), _header(headers, "x-api-key")
    ):
        raise SignatureError("the signature's keyid is not the X-API-KEY")
    try:
        key = base64.b64decode(client_secret, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("security.audiohook_client_secret is not base64") from None
    values: dict[str, str] = {"@request-target": request_target}
    for name in components:
        if not name.startswith("@"):
            value = _header(headers, name)
            if value is None:
                raise SignatureError(f"header {name!r} is signed but absent")
            values[name] = value
    unsupported = [
        c for c in components if c.startswith("@") and c not in ("@request-target", "@authority")
    ]
    if unsupported:
        raise SignatureError(f"cannot check derived component {unsupported[0]!r}")
    ok = False
    for authority in dict.fromkeys(a.lower() for a in authorities if a):
        values["@authority"] = authority
        expected = hmac.new(
            key, signature_base(components, params, values).encode(), hashlib.sha256
        ).digest()
        ok |= hmac.compare_digest(expected, given)
    if not ok:
        raise SignatureError("the signature does not match")
    if not equal(str(p["keyid"]), api_key):
        raise SignatureError("unknown X-API-KEY")
    if nonces is not None and not nonces.fresh(nonce, now):
        raise SignatureError("the signature's nonce was used before (a replay)")


def sign_audiohook(
    headers: Mapping[str, str],
    request_target: str,
    authority: str,
    api_key: str,
    client_secret: str,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Signature-Input and Signature headers for an AudioHook upgrade, as Genesys makes them."""
    now = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_urlsafe(24)
    params: Parameters = [
        ("keyid", api_key),
        ("nonce", nonce),
        ("alg", "hmac-sha256"),
        ("created", now),
        ("expires", now + int(MAX_AGE_S)),
    ]
    lower = {k.lower(): v for k, v in headers.items()}
    values = {
        "@request-target": request_target,
        "@authority": authority.lower(),
        **{c: lower[c] for c in AUDIOHOOK_COMPONENTS if not c.startswith("@")},
    }
    base = signature_base(list(AUDIOHOOK_COMPONENTS), params, values)
    digest = hmac.new(base64.b64decode(client_secret), base.encode(), hashlib.sha256).digest()
    inner = "(" + " ".join(f'"{c}"' for c in AUDIOHOOK_COMPONENTS) + ")" + _serialize_params(params)
    return {
        "Signature-Input": f"sig1={inner}",
        "Signature": f"sig1=:{base64.b64encode(digest).decode()}:",
    }


# == helpers for the platforms' checks and signers ===========================================
def request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
