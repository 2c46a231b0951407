"""Schemathesis hooks for the contract run (tests/it/contract.rs): every request carries a
working analyst's API token and, where the operation takes one, a one-time code that analyst has
not used yet.

The service accepts each 30-second step at most once per analyst (and the step after the current
one), so the hooks keep a pool of analysts and hand each request the analyst with a step left.
When every step is spent the code is reused on purpose: the documented answer is 401 otp-reused.
The analysts come in KILLSWITCH_CONTRACT_ANALYSTS as JSON, per role:
{"lead": [{"token": ..., "totp_hex": ...}, ...], "admin": [...]}. Leads act on accounts and
detections; admins manage customers and export the audit log.

Half of the requests that name a customer, an account, an action or a detection get one that
exists (KILLSWITCH_CONTRACT_KNOWN: {"customers": [...], "accounts": {customer: [...]},
"actions": [...], "detections": [...]}), so the run reaches past 404 into each operation.
"""

import hashlib
import hmac
import itertools
import json
import os
import random
import struct
import time

import schemathesis

STEP_SECS = 30
POOLS = json.loads(os.environ["KILLSWITCH_CONTRACT_ANALYSTS"])
SPENT = {a["token"]: set() for pool in POOLS.values() for a in pool}
ROTATIONS = {role: itertools.cycle(pool) for role, pool in POOLS.items()}
KNOWN = json.loads(os.environ["KILLSWITCH_CONTRACT_KNOWN"])
# Seeded like the tool, so a run can be replayed.
CHOICE = random.Random(1)
# The operations an admin calls (by tag); a lead calls every other.
ADMIN_TAGS = {"customers", "audit"}


def totp(secret: bytes, step: int) -> str:
    """RFC 6238 with SHA-1 and 6 digits, as every authenticator app computes it."""
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def fresh_credentials(role: str):
    """(token, code) of an analyst of `role` with an unspent step, else one's current code."""
    now = int(time.time()) // STEP_SECS
    for _ in range(len(POOLS[role])):
        analyst = next(ROTATIONS[role])
        spent = SPENT[analyst["token"]]
        # Steps are accepted in increasing order only, so the current one before the next.
        for step in (now, now + 1):
            if all(s < step for s in spent):
                spent.add(step)
                return analyst["token"], totp(bytes.fromhex(analyst["totp_hex"]), step)
    analyst = next(ROTATIONS[role])
    return analyst["token"], totp(bytes.fromhex(analyst["totp_hex"]), now)


def takes_code(case) -> bool:
    headers = case.operation.headers or []
    return any(getattr(p, "name", "").lower() == "x-killswitch-otp" for p in headers)


def name_known_things(case):
    """Half of the time, the customer, account and id in the path are ones that exist."""
    params = case.path_parameters
    if not params or CHOICE.random() < 0.5:
        return
    if "customer" in params:
        params["customer"] = CHOICE.choice(KNOWN["customers"])
        if "account" in params:
            params["account"] = CHOICE.choice(KNOWN["accounts"][params["customer"]])
    if "id" in params:
        things = "detections" if "/detections/" in case.operation.path else "actions"
        params["id"] = CHOICE.choice(KNOWN[things])


@schemathesis.hook
def before_call(context, case, kwargs):
    name_known_things(case)
    if case.operation.path.startswith("/api/v1/webhooks/"):
        return
    tags = set(case.operation.tags or [])
    token, code = fresh_credentials("admin" if tags & ADMIN_TAGS else "lead")
    case.headers = dict(case.headers or {})
    case.headers["Authorization"] = f"Bearer {token}"
    if takes_code(case):
        case.headers["X-Killswitch-OTP"] = code
