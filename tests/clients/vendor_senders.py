#!/usr/bin/env python3
"""Real senders against a running gateway: every request is signed by the vendor's own
library (Standard Webhooks, Svix, Stripe, Slack SDK) or, where the vendor publishes no library,
by the exact Python code of its documentation (Cerebrium, Nextmv, GitHub, Valohai).

    python3 tests/clients/vendor_senders.py http://127.0.0.1:3000 examples/gateway.toml

Reads the routes and secrets from the gateway's TOML file, and for each route sends a valid
request (expects 2xx), the same request again (expects 2xx: a duplicate is acknowledged), a
tampered body (expects 401, or 400 for Valohai) and, where the scheme is timed, a stale one
(expects 401 with the stale-timestamp problem type). Ends with `N passed, M failed`.
"""
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid


def post(url, body: bytes, headers: dict, content_type="application/json"):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def resolve(secret: str) -> str:
    match = re.fullmatch(r"\{env:(\w+)\}", secret)
    return os.environ[match.group(1)] if match else secret


# --- one signer per scheme: returns (headers, body bytes) -------------------------------------

def sign_cerebrium(secret, body: str, ts: int):
    # Cerebrium docs: signed_content = f"{request_id}.{timestamp}.{body}", hexdigest, "v1,"
    request_id = str(uuid.uuid4())
    signature = hmac.new(secret.encode(), f"{request_id}.{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Request-Id": request_id, "X-Cerebrium-Webhook-Timestamp": str(ts),
            "X-Cerebrium-Webhook-Signature": f"v1,{signature}"}


def sign_nextmv(secret, body: str, ts: int):
    # Nextmv's handler recomputes: mac.update(str(t)); mac.update(b"."); mac.update(payload)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    mac.update(str(ts).encode()); mac.update(b"."); mac.update(body.encode())
    return {"Nextmv-Signature": f"t={ts},v1={mac.hexdigest()}"}


def sign_stripe(secret, body: str, ts: int):
    import stripe
    signature = stripe.WebhookSignature._compute_signature(f"{ts}.{body}", secret)
    header = f"t={ts},v1={signature}"
    # Stripe's own verifier must accept what we send (it checks our reading of its format).
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
    return {"Stripe-Signature": header}


def sign_standard(secret, body: str, ts: int):
    from standardwebhooks.webhooks import Webhook
    msg_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body)}


def sign_svix(secret, body: str, ts: int):
    from svix.webhooks import Webhook
    msg_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return {"svix-id": msg_id, "svix-timestamp": str(ts),
            "svix-signature": Webhook(secret).sign(msg_id, when, body)}


def sign_github(secret, body: str, ts: int):
    # GitHub docs: "sha256=" + hmac.new(secret_token.encode('utf-8'), payload, sha256).hexdigest()
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode("utf-8"), body.encode(), hashlib.sha256).hexdigest(),
            "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Event": "ping"}


def sign_slack(secret, body: str, ts: int):
    from slack_sdk.signature import SignatureVerifier
    return {"X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)}


def valohai_requests(route, now):
    """Valohai's documented launch snippets, for the condition set the route declares."""
    conditions = route["scheme"].get("conditions", [])
    auth = next(c for c in conditions if c["type"] == "web_authentication")
    token = resolve(auth["secret"])
    data = urllib.parse.urlencode({'hello': 'valohai', 'prompt': 'draw me a shark'}).encode()
    if auth["auth_type"] == "static_token":
        # "Launch a webhook using urllib": headers={'Authorization': os.getenv("WEBHOOK_TOKEN")}
        return data, {auth["lookup_key"]: auth.get("value_prefix", "") + token}
    # "Web Timestamp with HMAC authentication example"
    timestamp = now
    calculated_hmac = hmac.new(
        key=token.encode(),
        msg=f"prefix.{data.decode()}.{timestamp}".encode(),
        digestmod='sha256',
    ).hexdigest()
    return data, {'Authorization': calculated_hmac, 'Request-Timestamp': str(timestamp)}


SIGNERS = {"cerebrium": sign_cerebrium, "nextmv": sign_nextmv, "stripe": sign_stripe,
           "standard_webhooks": sign_standard, "svix": sign_svix, "github": sign_github,
           "slack": sign_slack}
TIMED = {"cerebrium", "nextmv", "stripe", "standard_webhooks", "svix", "slack"}


def main():
    base_url, config_path = sys.argv[1], sys.argv[2]
    with open(config_path, "rb") as file:
        config = tomllib.load(file)
    passed, failed = 0, 0

    def check(name, got, want, body=b""):
        nonlocal passed, failed
        ok = got in want if isinstance(want, (set, range)) else got == want
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {got}" + ("" if ok else f" (want {want}) {body[:200]!r}"))
        passed, failed = passed + ok, failed + (not ok)

    for route in config.get("routes", []):
        kind = route["scheme"]["type"]
        secrets = route.get("secrets")
        if kind == "valohai":
            url = base_url + route["path"]
            form = "application/x-www-form-urlencoded"
            now = int(time.time())
            data, headers = valohai_requests(route, now)
            status, response_headers, answer = post(url, data, headers, form)
            check(f"valohai {route['path']} seed launch snippet", status, 200, answer)
            check(f"valohai {route['path']} answers with its response action",
                  bool(re.search(rb"[0-9a-f]{8}-[0-9a-f]{4}-", answer)), True, answer)
            status, _, answer = post(url, data + b"&x=1", headers, form)
            # A static token signs nothing, so only the HMAC route must refuse a changed body.
            signs_body = "Request-Timestamp" in headers
            check(f"valohai {route['path']} changed body ({'refused' if signs_body else 'token signs no body'})",
                  status, 400 if signs_body else 200, answer)
            bad = {k: (v + "0" if k == "Authorization" else v) for k, v in headers.items()}
            status, _, answer = post(url, data, bad, form)
            check(f"valohai {route['path']} wrong token: 400", status, 400, answer)
            if "Request-Timestamp" in headers:
                data, stale = valohai_requests(route, now - 3600)
                status, _, answer = post(url, data, stale, form)
                check(f"valohai {route['path']} stale timestamp: 400", status, 400, answer)
            continue
        if kind not in SIGNERS or secrets is None:
            continue
        secret = resolve(secrets if isinstance(secrets, str) else secrets[0])
        url = base_url + route["path"]
        body = json.dumps({"event": "test", "id": str(uuid.uuid4()), "emoji": "\u2728"})
        now = int(time.time())
        headers = SIGNERS[kind](secret, body, now)
        status, _, answer = post(url, body.encode(), headers)
        check(f"{kind} signed by the vendor's code", status, range(200, 300), answer)
        status, _, answer = post(url, body.encode(), headers)
        check(f"{kind} duplicate acknowledged", status, range(200, 300), answer)
        status, _, answer = post(url, (body + " ").encode(), headers)
        check(f"{kind} tampered body", status, 401, answer)
        if kind in TIMED:
            stale = SIGNERS[kind](secret, body, now - 3600)
            status, response_headers, answer = post(url, body.encode(), stale)
            check(f"{kind} stale timestamp", status, 401, answer)
            check(f"{kind} stale is problem+json", response_headers.get("Content-Type"), "application/problem+json")
            check(f"{kind} stale problem type", json.loads(answer).get("type", "").endswith("stale-timestamp"), True, answer)
        if kind == "standard_webhooks":
            # The same route also takes Svix's own headers and library.
            headers = sign_svix(secret, body, now)
            status, _, answer = post(url, body.encode(), headers)
            check("svix signed by the svix library", status, range(200, 300), answer)

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
