"""Task ids (ULIDs) and the randomness behind them."""

from __future__ import annotations

import os

from shared.ids import is_valid_id, new_id, new_ids, random_bytes


def test_ids_are_valid_distinct_and_sort_by_time():
    ids = [new_id(1_700_000_000.0 + i / 1000) for i in range(5000)]
    assert all(is_valid_id(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_random_bytes_never_repeat_across_blocks():
    chunks = [random_bytes(10) for _ in range(2000)]  # several 4 KiB blocks
    assert all(len(c) == 10 for c in chunks)
    assert len(set(chunks)) == len(chunks)


def test_a_forked_child_does_not_repeat_its_parents_bytes():
    random_bytes(10)  # the parent has a block in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send what it would use next, then leave at once
        os.write(write, random_bytes(10))
        os._exit(0)
    os.close(write)
    child = os.read(read, 10)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 10 and child != random_bytes(10)


def test_an_id_spells_its_time_and_randomness_in_crockford_base32():
    # 48 bits of milliseconds, then 80 random bits, most significant first, 5 bits a character.
    ms = 1_700_000_000_123
    value = int(new_id(ms / 1000).translate(str.maketrans(
        "0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")), 32)
    assert value >> 80 == ms
    assert new_id(0.0).startswith("0000000000")
    assert new_id(2**48 / 1000 - 0.001)[:10] == "7ZZZZZZZZZ"


def test_a_batch_of_ids_shares_its_time_and_spells_like_single_ids():
    ms = 1_700_000_000_123
    batch = new_ids(1000, ms / 1000)
    assert len(set(batch)) == 1000 and all(is_valid_id(i) for i in batch)
    assert {i[:10] for i in batch} == {new_id(ms / 1000)[:10]}
    for one in batch[:50]:
        value = int(one.translate(str.maketrans(
            "0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")), 32)
        assert value >> 80 == ms
    assert new_ids(0) == []
