#!/usr/bin/env python3
"""A webhook receiver built from Cerebrium's documented verification code.

    python3 tests/clients/cerebrium_receiver.py PORT SECRET OUT.jsonl [--status CODE]

Listens on 127.0.0.1:PORT, verifies every POST with `verify_webhook_signature` exactly as the
Cerebrium docs write it, and appends one JSON line per request to OUT.jsonl:
{"run_id", "verified", "path", "body", "headers"}. Answers 200 (or --status CODE).
"""
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify_webhook_signature(request_id, timestamp, body, signature, secret):
    # Verbatim logic from Cerebrium's "Webhook Signature Verification" docs.
    signature = signature.split(',')[1] if ',' in signature else signature
    signed_content = f"{request_id}.{timestamp}.{body}"
    expected_signature = hmac.new(secret.encode(), signed_content.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected_signature, signature)


def main():
    port, secret, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    status = int(sys.argv[sys.argv.index("--status") + 1]) if "--status" in sys.argv else 200

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            request_id = self.headers.get("X-Request-Id", "")
            verified = verify_webhook_signature(
                request_id, self.headers.get("X-Cerebrium-Webhook-Timestamp", ""), body,
                self.headers.get("X-Cerebrium-Webhook-Signature", ""), secret)
            with open(out, "a") as file:
                file.write(json.dumps({"run_id": request_id, "verified": verified, "path": self.path,
                                       "body": body, "headers": dict(self.headers)}) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
