"""seedbed.scrub: the one scrubber every message passes through."""

from __future__ import annotations

import pytest

from seedbed.scrub import REDACTED, Scrubber


@pytest.fixture
def s() -> Scrubber:
    return Scrubber()


def test_a_registered_secret_is_replaced_wherever_it_appears(s):
    s.secret("hunter2-very-long")
    assert s.scrub("login with hunter2-very-long failed") == f"login with {REDACTED} failed"


def test_a_token_with_a_trailing_newline_is_caught_in_a_librarys_repr(s):
    s.secret(b"tok-ABCDEFGH12345678\n")
    msg = "Illegal header value b'Bearer tok-ABCDEFGH12345678\\n'"
    assert "tok-ABCDEFGH12345678" not in s.scrub(msg)


def test_each_line_of_a_multiline_secret_is_caught(s):
    s.secret("first-line-of-key\nsecond-line-of-key\n")
    assert s.scrub("... second-line-of-key ...") == f"... {REDACTED} ..."


def test_short_values_are_not_registered(s):
    s.secret("abc")
    assert s.scrub("abc def") == "abc def"


@pytest.mark.parametrize("text", [
    "AGE-SECRET-KEY-" "1QYZ8R4WZ7XN2KD5JH9C3LVT6PFM0GA8SE4UWQ7RJDX2NK5ZC3HY9VL: no such file",
    "-----BEGIN OPENSSH " "PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY----- truncated",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
    "Authorization: Bearer abcdefgh12345678",
    "authorization=s3cr3tvalue99",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXBhcnQ",
    "token ghp_abcdEFGH1234567890xyz",
    "Basic dXNlcjpwYXNzd29yZA==",
])
def test_credential_shapes_are_caught_without_registration(s, text):
    out = s.scrub(text)
    assert REDACTED in out
    for fragment in ("QYZ8R4WZ", "AAAA\n", "truncated", "b3BlbnNzaC1r", "abcdefgh1234", "s3cr3tvalue",
                     "eyJzdWIi", "ghp_abcd", "dXNlcjpw"):
        assert fragment not in out


@pytest.mark.parametrize("text", [
    "token permissions denied",
    "basic authentication failed",
    "the token file /var/run/token is missing",
    "seedbed.yaml:3: cluster.name: 'Lab' is not a valid Kubernetes name",
])
def test_ordinary_words_stay_readable(s, text):
    assert s.scrub(text) == text


def test_a_label_before_a_credential_is_kept(s):
    assert s.scrub("Authorization: Bearer abcdefgh12345678") == f"Authorization: Bearer {REDACTED}"


def test_scrub_data_cleans_every_string_in_json_shaped_data():
    from seedbed import scrub

    scrub.secret("json-secret-123456")
    data = {"a": ["x json-secret-123456"], "json-secret-123456": 1, "n": 3}
    assert scrub.scrub_data(data) == {"a": [f"x {REDACTED}"], REDACTED: 1, "n": 3}
