#!/usr/bin/env python3
"""The vendors' own libraries on the other side of the `tower-webhooks` command line (tests/cli.rs).

Reads one JSON object from stdin (secrets travel there, never in argv) and runs one mode:

    verify  {"scheme", "secret", "body", "headers"}: checks headers printed by `tower-webhooks
            sign` with the vendor's library; prints `ok` or exits 1 with the library's error.
    sign    {"scheme": "standard_webhooks"|"svix", "secret", "body", "id", "timestamp"}: prints the
            headers the vendor's library signs the body with, as a JSON object.
    post    {"secret", "body", "url", "id"}: signs with svix's library and POSTs to `url`; prints
            `{"status": …, "content_type": …, "body": …}`.
"""
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone


def verify(job):
    scheme, secret, body, headers = job["scheme"], job["secret"], job["body"], job["headers"]
    if scheme == "stripe":
        import stripe
        stripe.WebhookSignature.verify_header(body, headers["stripe-signature"], secret, tolerance=300)
    elif scheme == "standard_webhooks":
        from standardwebhooks.webhooks import Webhook
        Webhook(secret).verify(body, headers)
    elif scheme == "svix":
        from svix.webhooks import Webhook
        Webhook(secret).verify(body, headers)
    elif scheme == "slack":
        from slack_sdk.signature import SignatureVerifier
        verifier = SignatureVerifier(secret)
        if not verifier.is_valid(body, headers["x-slack-request-timestamp"], headers["x-slack-signature"]):
            raise ValueError("slack_sdk: signature is not valid")
    elif scheme == "github":
        # GitHub publishes no library: this is the Python of its "Validating webhook
        # deliveries" page.
        expected = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers["x-hub-signature-256"]):
            raise ValueError("github: signature is not valid")
    else:
        raise ValueError(f"no vendor library for {scheme}")
    print("ok")


def sign(job):
    timestamp = datetime.fromtimestamp(job["timestamp"], tz=timezone.utc)
    if job["scheme"] == "svix":
        from svix.webhooks import Webhook
        signature = Webhook(job["secret"]).sign(job["id"], timestamp, job["body"])
        print(json.dumps({"svix-id": job["id"], "svix-timestamp": str(job["timestamp"]),
                          "svix-signature": signature}))
    else:
        from standardwebhooks.webhooks import Webhook
        signature = Webhook(job["secret"]).sign(job["id"], timestamp, job["body"])
        print(json.dumps({"webhook-id": job["id"], "webhook-timestamp": str(job["timestamp"]),
                          "webhook-signature": signature}))


def post(job):
    from svix.webhooks import Webhook
    now = int(time.time())
    signature = Webhook(job["secret"]).sign(job["id"], datetime.fromtimestamp(now, tz=timezone.utc), job["body"])
    if job.get("tamper"):
        job["body"] = job["body"] + " "
    request = urllib.request.Request(job["url"], data=job["body"].encode(), method="POST", headers={
        "Content-Type": "application/json",
        "svix-id": job["id"],
        "svix-timestamp": str(now),
        "svix-signature": signature,
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    print(json.dumps({"status": status, "content_type": headers.get("Content-Type"),
                      "body": body.decode()}))


if __name__ == "__main__":
    mode = sys.argv[1]
    job = json.load(sys.stdin)
    try:
        {"verify": verify, "sign": sign, "post": post}[mode](job)
    except Exception as error:  # the library's own exception, whatever its class
        print(f"{type(error).__name__}: {error}")
        sys.exit(1)
