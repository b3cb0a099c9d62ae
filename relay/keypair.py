"""A PEM certificate and its private key, read and checked to belong together (pure).

Both the relay's credential files (tls.py) and a kubeconfig's client pair (kubeconfig.py) are checked
this way; each says what a problem means in its own setting.
"""

from __future__ import annotations

from enum import Enum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization


class PairProblem(Enum):
    """What is wrong with a certificate and key."""

    CERTIFICATE_NOT_PEM = "the certificate is not PEM"
    KEY_ENCRYPTED = "the key is encrypted"
    KEY_NOT_PEM = "the key is not a PEM private key"
    PUBLIC_KEY_UNREADABLE = "the certificate's public key cannot be read"
    MISMATCH = "the key does not belong to the certificate"


class KeyPairError(ValueError):
    """The certificate and key cannot be used together; `problem` says why."""

    def __init__(self, problem: PairProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


def read_key_pair(cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """The first certificate of `cert_pem`, once `key_pem` (unencrypted) is shown to be its key."""
    try:
        certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise KeyPairError(PairProblem.CERTIFICATE_NOT_PEM) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # cryptography's way of saying a password is needed
        raise KeyPairError(PairProblem.KEY_ENCRYPTED) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyPairError(PairProblem.KEY_NOT_PEM) from None
    info = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        certificate_key = certificate.public_key().public_bytes(der, info)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyPairError(PairProblem.PUBLIC_KEY_UNREADABLE) from None
    if key.public_key().public_bytes(der, info) != certificate_key:
        raise KeyPairError(PairProblem.MISMATCH)
    return certificate
