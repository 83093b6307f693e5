"""The number trie that narrows the log scan to a user's sessions."""

from __future__ import annotations

import random
import re

from pam_teleport_audit.admin.search import _digit_trie


def test_trie_matches_exactly_its_numbers() -> None:
    rng = random.Random(7)
    for _ in range(200):
        numbers = sorted({str(rng.randint(0, 3000)) for _ in range(rng.randint(1, 30))})
        pattern = re.compile(f" ses={_digit_trie(numbers)} ")
        for n in range(3100):
            assert bool(pattern.search(f" ses={n} ")) == (str(n) in numbers), (numbers, n)


def test_trie_shape() -> None:
    assert _digit_trie(["71", "72", "1071", "7"]) == "(?:1071|7(?:1|2)?)"
    assert _digit_trie(["5"]) == "5"
