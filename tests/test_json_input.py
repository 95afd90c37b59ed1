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
