"""Keys for the integrity tests: derived from a seed (the same every run), one CloudTrail's, one not."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from trailguard.integrity.signing import seeded_rsa_key


@pytest.fixture(scope="session")
def key() -> rsa.RSAPrivateKey:
    return seeded_rsa_key("tests")


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return seeded_rsa_key("attacker")
