#!/usr/bin/env python3
"""A webhook receiver built from Nextmv's documented handler (the docs' `main.py`).

    python3 tests/clients/nextmv_receiver.py PORT SECRET OUT.jsonl

Listens on 127.0.0.1:PORT, checks every POST's `Nextmv-Signature` with `check_signature` as
Nextmv's sample handler writes it (exactly two comma-separated parts, t first, HMAC-SHA256 over "{t}.{raw body}" keyed with the
raw UTF-8 secret, lowercase hex, `now - 300 < t < now + 60`), and appends one JSON line per
request to OUT.jsonl: {"request_id", "verified", "reason", "path", "body", "headers"}.
Answers as the handler does: 200 {"message": "Webhook received!", ...} or 401 text/plain.
"""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def check_signature(payload: bytes, signature, secret: str):
    # Nextmv's sample handler, its logic kept verbatim; returns None when valid, else the
    # handler's 401 text.
    if signature is None:
        return "Unauthorized: Missing Signature"
    try:
        t, sig = signature.split(",")
        signature_time = int(t.split("=")[1])
        signature_string = sig.split("=")[1]
    except ValueError:
        return "Unauthorized: Invalid Signature Format"
    now = time.time()
    # Check that the signature is not older than 5 minutes and not in the future.
    if not (now - 300 < signature_time < now + 60):
        return "Unauthorized: Invalid Time Value"
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    mac.update(str(signature_time).encode())
    mac.update(b".")
    mac.update(payload)
    recomputed = mac.hexdigest()
    if not hmac.compare_digest(recomputed, signature_string):
        return "Unauthorized: Invalid signature"
    return None


def main():
    port, secret, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            reason = check_signature(payload, self.headers.get("nextmv-signature"), secret)
            with open(out, "a") as file:
                file.write(json.dumps({
                    "request_id": self.headers.get("X-Request-Id", ""),
                    "verified": reason is None, "reason": reason, "path": self.path,
                    "body": payload.decode(), "headers": dict(self.headers)}) + "\n")
            if reason is None:
                answer = json.dumps({"message": "Webhook received!",
                                     "body": json.loads(payload)}).encode()
                kind, status = "application/json", 200
            else:
                answer, kind, status = reason.encode(), "text/plain", 401
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
