"""A certificate and its key read together: each way they can fail, with real generated material."""

from __future__ import annotations

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relay.keypair import KeyPairError, PairProblem, read_key_pair


@pytest.fixture(scope="module")
def leaf() -> trustme.LeafCert:
    return trustme.CA().issue_cert("metrics-relay@test")


def encrypted(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def test_a_matching_pair_gives_the_certificate(leaf):
    """The first certificate of the chain comes back once the key is shown to be its own."""
    chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
    certificate = read_key_pair(chain, leaf.private_key_pem.bytes())
    assert certificate == x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


@pytest.mark.parametrize(
    ("cert", "key", "problem"),
    [
        pytest.param("garbage", "leaf", PairProblem.CERTIFICATE_NOT_PEM, id="certificate-not-pem"),
        pytest.param("leaf", "garbage", PairProblem.KEY_NOT_PEM, id="key-not-pem"),
        pytest.param("leaf", "encrypted", PairProblem.KEY_ENCRYPTED, id="key-encrypted"),
        pytest.param("leaf", "other", PairProblem.MISMATCH, id="another-key"),
    ],
)
def test_each_problem_is_named(leaf, cert, key, problem):
    """Every way the pair fails raises KeyPairError naming that problem."""
    other = trustme.CA().issue_cert("someone-else")
    materials = {
        "leaf": (leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()),
        "garbage": (b"not pem", b"not pem"),
        "encrypted": (b"", encrypted(leaf.private_key_pem.bytes())),
        "other": (b"", other.private_key_pem.bytes()),
    }
    with pytest.raises(KeyPairError) as caught:
        read_key_pair(materials[cert][0], materials[key][1])
    assert caught.value.problem is problem
    assert str(caught.value) == problem.value
