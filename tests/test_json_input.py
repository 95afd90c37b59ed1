"""shared/json_input.py on its own: what the door reads, without a server."""

from __future__ import annotations

import pytest

from shared.json_input import BodyError, decode


@pytest.mark.parametrize("body", [
    b'{"a":1,"a":2}',
    b'{"x":"a:b","y":{"c":1,"c":[1,{"d":2}]}}',
    b'{"q":"\\":,\\\\","k":1,"k":2}',
    b'[{"k":1},{"k":1,"k":1}]',
    b'{"a\\u0022":1, "a\\"":2}',  # one key, spelled twice
])
def test_a_repeated_key_is_refused_wherever_it_hides(body: bytes):
    with pytest.raises(BodyError) as caught:
        decode(body)
    assert caught.value.status == 400 and "duplicate key" in str(caught.value)


@pytest.mark.parametrize(("body", "value"), [
    (b'{"a":"x\\":\\\\","b":{"c":1,"e":[1,{"d":"::"}]}}',
     {"a": 'x":\\', "b": {"c": 1, "e": [1, {"d": "::"}]}}),
    (b'[{"k":1},{"k":2}]', [{"k": 1}, {"k": 2}]),
    (b'{"a":{},"b":[],"c":"{\\"a\\":1,\\"a\\":2}"}', {"a": {}, "b": [], "c": '{"a":1,"a":2}'}),
    (b'{"tasks":[' + b",".join([b'{"type":"shell","payload":{"command":"true"}}'] * 100)
     + b"]}", {"tasks": [{"type": "shell", "payload": {"command": "true"}}] * 100}),
])
def test_colons_and_quotes_inside_strings_are_not_members(body: bytes, value: object):
    assert decode(body) == value


def _nested(depth: int) -> bytes:
    """A batch-shaped body (many brackets, commas) whose deepest payload value nests `depth`
    containers in all, the body's own object counting as 1."""
    inner = b"[" * (depth - 4) + b"1" + b"]" * (depth - 4)
    item = b'{"type":"http","payload":{"url":"https://example.com/a:b","json":' + inner + b"}}"
    plain = b'{"type":"shell","payload":{"command":"true"}}'
    return b'{"tasks":[' + b",".join([plain] * 40 + [item]) + b"]}"


def test_the_nesting_limit_is_exact_in_a_big_body():
    assert len(decode(_nested(64))["tasks"]) == 41
    with pytest.raises(BodyError) as caught:
        decode(_nested(65))
    assert caught.value.status == 400 and "nested more than 64 levels" in str(caught.value)


def test_a_repeated_key_among_colons_in_strings_is_refused_in_a_big_body():
    plain = b'{"type":"http","payload":{"url":"https://example.com:8443/a"}}'
    twice = b'{"type":"http","payload":{"url":"https://example.com/","url":"http://x/"}}'
    body = b'{"tasks":[' + b",".join([plain] * 50 + [twice]) + b"]}"
    with pytest.raises(BodyError) as caught:
        decode(body)
    assert caught.value.status == 400 and "duplicate key 'url'" in str(caught.value)
    # Escaped colons in strings do not make up for a repeated key.
    sneaky = b'{"a":"\\u003a","k":1,"k":2}'
    with pytest.raises(BodyError):
        decode(sneaky)
