#!/usr/bin/env python3
"""An independent Standard Webhooks verifier for what the crate signs: `v1` entries with
Python's `hmac`, `v1a` entries with the `cryptography` package's Ed25519 (OpenSSL).

Reads one JSON document on standard input:

    {"secrets": ["whsec_…"], "public_keys": ["whpk_…"],
     "messages": [{"id": "…", "timestamp": 1, "body_base64": "…", "signature": "v1,… v1a,…"}]}

and writes one JSON list: per message, whether some `v1` entry matched some secret and whether
some `v1a` entry verified under some public key (`{"v1": true, "v1a": false}`).
"""
import base64
import hashlib
import hmac
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def strip(prefix: str, value: str) -> bytes:
    assert value.startswith(prefix), f"expected {prefix}…"
    return base64.b64decode(value[len(prefix):])


def main():
    request = json.load(sys.stdin)
    hmac_keys = [strip("whsec_", secret) for secret in request["secrets"]]
    public_keys = [Ed25519PublicKey.from_public_bytes(strip("whpk_", key))
                   for key in request["public_keys"]]
    results = []
    for message in request["messages"]:
        body = base64.b64decode(message["body_base64"])
        content = f"{message['id']}.{message['timestamp']}.".encode() + body
        v1 = v1a = False
        for entry in message["signature"].split(" "):
            version, _, encoded = entry.partition(",")
            signature = base64.b64decode(encoded)
            if version == "v1":
                v1 |= any(hmac.compare_digest(hmac.new(key, content, hashlib.sha256).digest(), signature)
                          for key in hmac_keys)
            elif version == "v1a":
                for key in public_keys:
                    try:
                        key.verify(signature, content)
                        v1a = True
                    except InvalidSignature:
                        pass
        results.append({"v1": v1, "v1a": v1a})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
