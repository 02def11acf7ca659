"""
Secrets never leave in a masked string: ``mask_url`` for every URL and DSN
form (examples, then properties over generated secrets), and the ``repr`` of
every object a hook receives or returns that can hold one.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import example, given, settings, strategies as st
from psycopg.conninfo import conninfo_to_dict

from mdgate._config import Secret, load_settings, mask_url
from mdgate._errors import ConfigError
from mdgate._provider import Connector, Endpoint, Transport
from mdgate._redact import MASK, MAX_AT, MAX_LENGTH

# -- examples: the forms an operator writes ------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://u:p%2Fw%23x%40y%3Fz%3A@h:5432/db", "postgresql://u:***@h:5432/db"),
        # a password that should have been percent-encoded, and was not
        ("postgresql://u:pa/ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:pa#ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pa?ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p:a:ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql://u:pw@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("wss://feed?token=abc&clientId=1", "wss://feed?token=***&clientId=***"),
        ("postgresql://h/db?sslmode=require&password=pw", "postgresql://h/db?sslmode=***&password=***"),
        ("https://h/cb#access_token=tok", "https://h/cb#access_token=***"),
        ("http://h/p?email=a@b.com", "http://h/p?email=***"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("http://u:pw@[::1]:8080/x", "http://u:***@[::1]:8080/x"),
        ("redis+unix:///run/redis.sock?password=pw", "redis+unix:///run/redis.sock?password=***"),
        ("u:pw@h:5432/db", "u:***@h:5432/db"),
        ("localhost:6379", "localhost:6379"),
        ("", ""),
        # libpq keyword/value DSNs
        ("host=h password=secret user=u", "host=h password=*** user=u"),
        ("host=h password='a b' user=u dbname=d", "host=h password=*** user=u dbname=d"),
        (r"host=h password='it\'s \\ x' user=u", "host=h password=*** user=u"),
        ("host = h  password = secret", "host=h password=***"),
        (r"password=a\ b host=h", "password=*** host=h"),
        ("host=h sslpassword=k sslkey=/k.pem port=5432", "host=h sslpassword=*** sslkey=*** port=5432"),
        ("dbname='postgresql://u:pw@h/db' host=x", "dbname=postgresql://u:***@h/db host=x"),
        ("dbname='host=h password=pw'", "dbname='host=h password=***'"),
        # unparseable: keep what is certain, mask the rest
        ("host=h password='unterminated user=u", "host=h password=***"),
        ("host=h password", "host=h ***"),
        ("host=h =x", "host=h ***"),
        ("http://h:notaport/x", "http://h:notaport/x"),  # no '@': nothing there is a credential
        ("http://h:pw/x@y", "http://h:***@y"),
    ],
)
def test_mask_url_examples(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_is_bounded() -> None:
    assert mask_url("redis://" + "a" * MAX_LENGTH + ":pw@h") == "redis://" + MASK
    many_at = "redis://u:" + "@" * (MAX_AT + 1) + "h"
    assert mask_url(many_at) == "redis://" + MASK
    assert mask_url(123) == MASK  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------

# Printable ASCII without '*' (a secret made of asterisks is "found" in the mask itself).
SECRET = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="*"),
    min_size=6,
    max_size=40,
).filter(lambda s: s.strip() == s)
NAME = st.from_regex(r"[a-z][a-z0-9]{2,10}", fullmatch=True)
SCHEME = st.sampled_from(["postgresql", "postgres", "redis", "rediss", "wss", "https"])
PORT = st.sampled_from(["", ":5432", ":6379", ":1"])
PATH = st.sampled_from(["", "/", "/db", "/0", "/a/b"])
QUERY = st.sampled_from(["", "?sslmode=require", "?a=1&b=2", "#frag"])


QUERY_MASKED = {"": "", "?sslmode=require": "?sslmode=***", "?a=1&b=2": "?a=***&b=***", "#frag": "#***"}


def _visible(secret: str, *others: str) -> bool:
    """The secret cannot be told apart from a part that is meant to stay visible."""
    return any(secret in o or o in secret for o in others)


def assert_no_leak(out: str, secrets: tuple[str, ...], elsewhere: str, k: int = 4) -> None:
    """
    No piece of k characters of any form of the secret is in ``out``, unless that
    piece is also in ``elsewhere`` (the input without the secret): a partial leak
    fails as surely as a whole one.
    """
    for secret in secrets:
        assert secret not in out
        for i in range(len(secret) - k + 1):
            piece = secret[i : i + k]
            assert piece not in out or piece in elsewhere, (piece, out)


@settings(max_examples=150, deadline=None)
@given(scheme=SCHEME, user=NAME, secret=SECRET, host=NAME, port=PORT, path=PATH, query=QUERY,
       encoded=st.booleans())
@example(scheme="postgresql", user="usr", secret="pa/ss#w@rd?x:y", host="dbhost", port=":5432",
         path="/db", query="?sslmode=require", encoded=False)
@example(scheme="redis", user="usr", secret="p@ssword1", host="cache", port="", path="/0", query="",
         encoded=False)
def test_password_in_a_url_never_shows(
    scheme: str, user: str, secret: str, host: str, port: str, path: str, query: str, encoded: bool
) -> None:
    password = quote(secret, safe="") if encoded else secret
    url = f"{scheme}://{user}:{password}@{host}{port}{path}{query}"
    out = mask_url(url)
    if _visible(secret, scheme, user, host, port, path, query):
        return  # e.g. the host name inside the secret: nothing tells them apart
    assert_no_leak(out, (secret, password), url.replace(password, "") + MASK)
    assert out.startswith(f"{scheme}://{user}:")  # the user stays visible
    if encoded or not set(secret) & set("?#@"):  # unambiguous: everything but the secret stays
        assert out == f"{scheme}://{user}:{MASK}@{host}{port}{path}{QUERY_MASKED[query]}"


# Raw (not percent-encoded) query values may hold '@', ':' and '/', not the query's own syntax.
RAW_QUERY_SECRET = SECRET.filter(lambda s: not set(s) & set("&;#?= "))


@settings(max_examples=150, deadline=None)
@given(scheme=SCHEME, host=NAME, port=PORT, path=PATH, key=st.sampled_from(["token", "password", "x"]),
       secret=SECRET, raw=RAW_QUERY_SECRET, encoded=st.booleans(), before=st.booleans(),
       user=st.sampled_from(["", "u@", "u:pw@"]))
def test_query_value_never_shows(
    scheme: str, host: str, port: str, path: str, key: str, secret: str, raw: str, encoded: bool,
    before: bool, user: str,
) -> None:
    secret = secret if encoded else raw
    value = quote(secret, safe="") if encoded else secret
    params = [f"{key}={value}", "mode=1"]
    url = f"{scheme}://{user}{host}{port}{path or '/'}?{'&'.join(params if before else params[::-1])}"
    out = mask_url(url)
    if _visible(secret, scheme, host, port, path, key, "mode=1", user):
        return
    assert_no_leak(out, (secret, value), url.replace(value, "") + MASK)
    if encoded or "@" not in secret or not user.endswith("pw@"):
        masked = "&".join([f"{key}={MASK}", f"mode={MASK}"][:: 1 if before else -1])
        assert out == f"{scheme}://{user.replace('pw', MASK)}{host}{port}{path or '/'}?{masked}"
    else:  # the '@' in the query may end the password: both readings are masked
        assert out.startswith(f"{scheme}://u:{MASK}")


def _dsn_value(secret: str, quoted: bool) -> str:
    if quoted or not secret or any(c.isspace() or c in "'\\" for c in secret):
        return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return secret


@settings(max_examples=150, deadline=None)
@given(host=NAME, user=NAME, db=NAME, secret=SECRET, quoted=st.booleans(),
       key=st.sampled_from(["password", "sslpassword"]), order=st.permutations(range(4)))
def test_password_in_a_libpq_dsn_never_shows(
    host: str, user: str, db: str, secret: str, quoted: bool, key: str, order: list[int]
) -> None:
    pairs = [f"host={host}", f"user={user}", f"{key}={_dsn_value(secret, quoted)}", f"dbname={db}"]
    dsn = " ".join(pairs[i] for i in order)
    assert conninfo_to_dict(dsn)[key] == secret  # libpq reads the secret we meant to write
    out = mask_url(dsn)
    if _visible(secret, host, user, db, key):
        return
    assert_no_leak(out, (secret,), dsn.replace(_dsn_value(secret, quoted), "") + MASK)
    for visible in (f"host={host}", f"user={user}", f"dbname={db}", f"{key}={MASK}"):
        assert visible in out


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_masked_without_error(text: str) -> None:
    out = mask_url(text)
    assert isinstance(out, str)
    assert len(out) <= 2 * len(text) + len(MASK) * (len(text) + 1)  # DSN values may be re-quoted
    if "@" not in text and "=" not in text and "?" not in text and "#" not in text and ":" not in text:
        assert out == text  # nothing that can hold a credential: shown as it is


# -- repr of what hooks receive and return ------------------------------------------


def test_endpoint_repr_masks_url_headers_and_handshake() -> None:
    ep = Endpoint(
        url="wss://feed.example?version=2&token=TOKEN-1&clientId=CID-1",
        display_url="wss://feed.example?token=***",
        headers={"Authorization": "Bearer TOKEN-2"},
        handshake=['{"login": "TOKEN-3"}'],
    )
    for text in (repr(ep), str(ep), str([ep]), f"{ep!r}"):
        for secret in ("TOKEN-1", "CID-1", "TOKEN-2", "TOKEN-3"):
            assert secret not in text
    assert "wss://feed.example?version=***&token=***" in repr(ep)
    assert "Authorization" in repr(ep) and "handshake=<1 frame(s)>" in repr(ep)
    assert ep.url.endswith("clientId=CID-1")  # the real URL is untouched


def test_connector_subclass_repr_shows_only_the_masked_url() -> None:
    class Login(Connector):
        def __init__(self) -> None:
            self.display_url = "tcp://user:PASSWORD@feed:9000"
            self.password = "PASSWORD"

        async def open(self) -> Transport:  # pragma: no cover - never opened here
            raise NotImplementedError

    text = repr(Login())
    assert "PASSWORD" not in text and "tcp://user:***@feed:9000" in text


def test_settings_repr_hides_provider_tables_and_secrets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "mdgate.toml"
    cfg.write_text(
        '[server]\ntokens = ["CLIENT-TOKEN"]\n[redis]\nurl = "redis://:REDIS-PW@h:6379/0"\n'
        '[database]\nurl = "host=h password=PG-PW"\n'
        '[providers.dhan]\naccess_token = "DHAN-TOKEN"\nclient_id = "DHAN-ID"\n'
    )
    s = load_settings(cfg, {"DHAN_ACCESS_TOKEN": "ENV-TOKEN"})
    text = repr(s)
    for secret in ("CLIENT-TOKEN", "REDIS-PW", "PG-PW", "DHAN-TOKEN", "DHAN-ID", "ENV-TOKEN"):
        assert secret not in text
    assert "providers=<keys {'dhan': ['access_token', 'client_id']}>" in text
    assert "Secret('***')" in text and "port=8765" in text
    assert s.server.tokens == (Secret("CLIENT-TOKEN"),)  # masked in repr only


def test_provider_config_reprs_hide_credentials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mdgate_dhan.config import parse_config as dhan_config
    from mdgate_yahoo.config import parse_config as yahoo_config

    token_file = tmp_path / "dhan.token"
    token_file.write_text("DHAN-FILE-TOKEN\n")
    dhan = dhan_config({"access_token_file": str(token_file)}, {"DHAN_CLIENT_ID": "DHAN-ID-77"})
    yahoo = yahoo_config({"url": "wss://proxy-user:PROXY-PW@yahoo.example/?version=2&key=API-KEY"}, {})
    for text in (repr(dhan), str(dhan), repr(yahoo), str(yahoo)):
        for secret in ("DHAN-FILE-TOKEN", "DHAN-ID-77", "PROXY-PW", "API-KEY"):
            assert secret not in text
    assert "wss://proxy-user:***@yahoo.example/?version=***&key=***" in repr(yahoo)
    assert str(token_file) in repr(dhan)  # where the token comes from is not a secret
    with pytest.raises(ConfigError) as info:
        yahoo_config({"url": "https://u:PROXY-PW@yahoo.example/"}, {})
    assert "PROXY-PW" not in str(info.value)
