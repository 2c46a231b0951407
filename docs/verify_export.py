#!/usr/bin/env python3
"""Independent verifier for killswitch audit exports (JSON Lines, format version 1).

It follows docs/audit-format.md step by step, using nothing but the Python 3 standard
library; Ed25519 (RFC 8032) verification is implemented below from the curve equations.

    python3 verify_export.py EXPORT.jsonl --public-key KEYFILE [--public-key KEYFILE ...]
                             [--customer SLUG] [--witness FILE ...]

A key file holds the public key as SubjectPublicKeyInfo PEM (`killswitch audit public-key`),
as the JSON of `killswitch audit public-key --json` or GET /api/v1/audit/public-key, or as the
bare base64 of the 32 key bytes. Give every key the export may be signed with (after a key
rotation, old checkpoints are signed with the old key). EXPORT.jsonl may be `-` for standard
input.

A witness file holds a witness from a notice about an action on your tenant (or a checkpoint
line copied out of an earlier export): the export must agree with it, so a log rewritten after
the witness was issued is refused (docs/audit-format.md, "Witnesses").

Exit status: 0 and `intact: ...` when the export is intact (and agrees with every witness);
1 and `NOT INTACT: line N: reason` at the first line that cannot be trusted; 2 when the command
line, a key file or a witness file is wrong.
"""

import argparse
import base64
import binascii
import hashlib
import json
import math
import re
import sys
from datetime import datetime

# --------------------------------------------------------------------------------------------
# Ed25519 signature verification (RFC 8032, section 5.1), on the twisted Edwards curve
#   -x^2 + y^2 = 1 + d x^2 y^2  over GF(p),  p = 2^255 - 19.
# Points are kept in extended coordinates (X : Y : Z : T) with x = X/Z, y = Y/Z, x*y = T/Z.
# --------------------------------------------------------------------------------------------

FIELD = 2**255 - 19
ORDER = 2**252 + 27742317777372353535851937790883648493  # L, the order of the base point
CURVE_D = -121665 * pow(121666, FIELD - 2, FIELD) % FIELD
TWO_D = 2 * CURVE_D % FIELD
SQRT_MINUS_ONE = pow(2, (FIELD - 1) // 4, FIELD)
NEUTRAL = (0, 1, 1, 0)


def point_add(a, b):
    """a + b (the unified addition formula for a = -1, RFC 8032 section 5.1.4)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    p = FIELD
    e1 = (y1 - x1) * (y2 - x2) % p
    e2 = (y1 + x1) * (y2 + x2) % p
    e3 = t1 * TWO_D * t2 % p
    e4 = 2 * z1 * z2 % p
    e, f, g, h = e2 - e1, e4 - e3, e4 + e3, e2 + e1
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def point_double(a):
    """2a (dedicated doubling, RFC 8032 section 5.1.4)."""
    x1, y1, z1, _ = a
    p = FIELD
    xx = x1 * x1 % p
    yy = y1 * y1 % p
    zz2 = 2 * z1 * z1 % p
    h = xx + yy
    e = (h - (x1 + y1) * (x1 + y1)) % p
    g = xx - yy
    f = zz2 + g
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def point_negate(a):
    x, y, z, t = a
    return ((-x) % FIELD, y, z, (-t) % FIELD)


def point_encode(a):
    """The 32-byte encoding: y little-endian, with the low bit of x in the top bit."""
    x, y, z, _ = a
    z_inv = pow(z, FIELD - 2, FIELD)
    x = x * z_inv % FIELD
    y = y * z_inv % FIELD
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def point_decode(data):
    """The point a 32-byte encoding names, or None (RFC 8032 section 5.1.3)."""
    if len(data) != 32:
        return None
    number = int.from_bytes(data, "little")
    sign = number >> 255
    y = number & ((1 << 255) - 1)
    if y >= FIELD:
        return None
    # x^2 = (y^2 - 1) / (d y^2 + 1); candidate root x = u v^3 (u v^7)^((p-5)/8).
    u = (y * y - 1) % FIELD
    v = (CURVE_D * y * y + 1) % FIELD
    v3 = v * v * v % FIELD
    x = u * v3 * pow(u * v3 * v3 * v % FIELD, (FIELD - 5) // 8, FIELD) % FIELD
    check = v * x * x % FIELD
    if check == (-u) % FIELD:
        x = x * SQRT_MINUS_ONE % FIELD
    elif check != u:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = FIELD - x
    return (x, y, 1, x * y % FIELD)


BASE_Y = 4 * pow(5, FIELD - 2, FIELD) % FIELD
BASE = point_decode(BASE_Y.to_bytes(32, "little"))  # x is even: sign bit 0


def ed25519_verify(public_key, message, signature):
    """Whether `signature` (64 bytes) is a valid Ed25519 signature of `message` by
    `public_key` (32 bytes): S < L, and [S]B - [k]A encodes to exactly the bytes R, with
    k = SHA-512(R || A || message) mod L."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    point_a = point_decode(public_key)
    if point_a is None:
        return False
    r_bytes = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= ORDER:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % ORDER
    # [s]B + [k](-A), both scalars at once (Straus' method: one chain of doublings).
    minus_a = point_negate(point_a)
    table = (None, BASE, minus_a, point_add(BASE, minus_a))
    acc = NEUTRAL
    for bit in range(max(s.bit_length(), k.bit_length()) - 1, -1, -1):
        acc = point_double(acc)
        pick = ((s >> bit) & 1) | (((k >> bit) & 1) << 1)
        if pick:
            acc = point_add(acc, table[pick])
    return point_encode(acc) == r_bytes


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

# DER of SubjectPublicKeyInfo { AlgorithmIdentifier { id-Ed25519 (1.3.101.112) }, BIT STRING }
# followed by the 32 key bytes (RFC 8410).
SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")


class KeyError_(Exception):
    pass


def strict_base64(text):
    """Standard base64 with padding, decoded; None unless `text` is exactly the canonical
    encoding of the bytes (no missing or extra padding, no stray bits, no other characters)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(data).decode("ascii") != text:
        return None
    return data


def parse_public_key(text):
    """The 32 raw key bytes from a key file's text (PEM, JSON, or bare base64)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        match = re.fullmatch(
            r"-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----", text
        )
        der = strict_base64("".join(match.group(1).split())) if match else None
        if der is None or len(der) != 44 or not der.startswith(SPKI_ED25519_PREFIX):
            raise KeyError_("not an Ed25519 public key in PEM form")
        raw = der[-32:]
    elif text.startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise KeyError_(f"not a public key JSON document: {e}") from None
        encoded = document.get("public_key") if isinstance(document, dict) else None
        if not isinstance(encoded, str):
            raise KeyError_("the JSON document has no `public_key`")
        raw = strict_base64(encoded.strip())
    else:
        raw = strict_base64(text)
    if raw is None or len(raw) != 32 or point_decode(raw) is None:
        raise KeyError_("not a base64 Ed25519 public key")
    return raw


def key_id(raw):
    """The first 8 bytes of SHA-256 of the raw key, as 16 lowercase hex digits."""
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------

ENTRY_PREFIX = b'{"entry":'
HASH_INFIX = b',"hash":"'
ENTRY_SUFFIX = b'","type":"entry"}'
FORMAT = "killswitch-audit-export"
VERSION = 1
ENTRY_FORMAT_VERSION = 1
GENESIS_PREFIX = b"killswitch-audit-genesis:"
CHECKPOINT_TYPE = "killswitch-audit-checkpoint-v1"
HEX64 = re.compile(r"[0-9a-f]{64}")
TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z")


class Bad(Exception):
    """The line being read cannot be trusted; the message says why."""


# How deep arrays and objects may nest on a line (section 1). Checked before a line is parsed,
# so that no parser's own limit (Python's recursion, serde_json's 128) decides a verdict.
MAX_DEPTH = 32
TOO_DEEP = f"the line nests arrays and objects deeper than {MAX_DEPTH} levels"
# A string (to its closing quote, or to the end of the line when it has none) or a bracket.
STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def nests_within_limit(line):
    """Whether `line` never has more than MAX_DEPTH arrays and objects open at once: each [ or {
    outside a string opens one, each ] or } outside a string closes one, and a string runs from
    a quote to the next quote not escaped by a backslash."""
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return True  # what every line the service writes takes: no more opened than that
    depth = 0
    for token in STRUCTURE.finditer(line):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif first in (b"]", b"}"):
            depth -= 1
    return True


def _no_duplicates(pairs):
    obj = {}
    for name, value in pairs:
        if name in obj:
            raise ValueError(f"duplicate member `{name}`")
        obj[name] = value
    return obj


def _no_constants(name):
    raise ValueError(f"`{name}` is not JSON")


def _double(text):
    number = float(text)
    if math.isinf(number):
        raise ValueError("a number beyond the range of a double")
    return number


def _integer(text):
    # `-0` is the double negative zero, as serde_json reads it: no integer of this format.
    if text == "-0":
        return -0.0
    if len(text) > 300:
        _double(text)  # a thousand digits are no double either
    return int(text)


# Where a string may hold an escaped surrogate; only then is the parsed value searched for one.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(data):
    """Strict JSON (section 1): UTF-8, no NaN/Infinity, no repeated member names, no lone
    surrogate in a string, no number beyond the range of a double."""
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    value = json.loads(
        text,
        object_pairs_hook=_no_duplicates,
        parse_constant=_no_constants,
        parse_float=_double,
        parse_int=_integer,
    )
    if SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone surrogate") from None
    return value


def jcs(value):
    """The RFC 8785 form of a parsed JSON value whose numbers are all integers (the format
    allows no others, and they are checked first): members sorted by their UTF-16 code units,
    no whitespace, strings with the shortest escapes, integers written plainly."""
    return _jcs(value).encode("utf-8")  # fails on lone surrogates, which no canonical line holds


def _jcs(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # Python's escapes are RFC 8785's: \" \\ \b \f \n \r \t, other controls as \u00xx.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        names = sorted(value, key=lambda name: name.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_jcs(name) + ":" + _jcs(value[name]) for name in names) + "}"
    raise ValueError(f"{type(value).__name__} has no canonical form here")


def is_u64(value, bits=64):
    # Not bool (a JSON true is not a number); the range the entry's fields are read into.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**bits


def is_str(value):
    return isinstance(value, str)


# --------------------------------------------------------------------------------------------
# What the format promises of every value (section 1 and the member tables): each line's
# members, in the order they are checked, with their JSON types.
# --------------------------------------------------------------------------------------------

LIMIT = 2**53
TEXT, TIMESTAMP, COUNT, COUNTS, OBJECT = "text", "time", "count", "counts", "object"
REQUIRED, NULLABLE, OPTIONAL = "required", "nullable", "optional"
DESCRIBED = {
    TEXT: "a string",
    TIMESTAMP: "a time of the form 2026-11-27T09:40:05.123456Z",
    COUNT: "a whole number from 0 to 2^53 - 1",
    COUNTS: "a list of whole numbers from 0 to 2^53 - 1",
    OBJECT: "an object",
}


def is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < LIMIT


def holds(kind, value):
    if kind == TEXT:
        return isinstance(value, str)
    if kind == TIMESTAMP:
        return isinstance(value, str) and canonical_time(value)
    if kind == COUNT:
        return is_count(value)
    if kind == COUNTS:
        return isinstance(value, list) and all(is_count(v) for v in value)
    return isinstance(value, dict)


HEADER_MEMBERS = [
    ("type", TEXT, REQUIRED),
    ("format", TEXT, REQUIRED),
    ("version", COUNT, REQUIRED),
    ("chain", TEXT, REQUIRED),
    ("customer", TEXT, REQUIRED),
    ("from", TIMESTAMP, NULLABLE),
    ("to", TIMESTAMP, NULLABLE),
    ("exported_at", TIMESTAMP, REQUIRED),
    ("first_seq", COUNT, NULLABLE),
    ("last_seq", COUNT, NULLABLE),
    ("prev_hash", TEXT, NULLABLE),
    ("key_id", TEXT, REQUIRED),
    ("checkpoint_seqs", COUNTS, REQUIRED),
    ("signature", TEXT, OPTIONAL),
]
ENTRY_MEMBERS = [
    ("v", COUNT, REQUIRED),
    ("chain", TEXT, REQUIRED),
    ("seq", COUNT, REQUIRED),
    ("time", TIMESTAMP, REQUIRED),
    ("prev_hash", TEXT, REQUIRED),
    ("actor", OBJECT, REQUIRED),
    ("event", OBJECT, REQUIRED),
]
CHECKPOINT_MEMBERS = [
    ("type", TEXT, REQUIRED),
    ("chain", TEXT, REQUIRED),
    ("seq", COUNT, REQUIRED),
    ("hash", TEXT, REQUIRED),
    ("time", TIMESTAMP, REQUIRED),
    ("key_id", TEXT, REQUIRED),
    ("signature", TEXT, REQUIRED),
]
SEAL_MEMBERS = [
    ("type", TEXT, REQUIRED),
    ("chain", TEXT, REQUIRED),
    ("entries", COUNT, REQUIRED),
    ("first_seq", COUNT, NULLABLE),
    ("last_seq", COUNT, NULLABLE),
    ("last_hash", TEXT, NULLABLE),
    ("header_sha256", TEXT, REQUIRED),
    ("time", TIMESTAMP, REQUIRED),
    ("key_id", TEXT, REQUIRED),
    ("signature", TEXT, OPTIONAL),
]


def check_members(obj, what, table):
    """Members present, none unknown, each of its type: in that order, the first in each by the
    table's order (unknown ones by name)."""
    if not isinstance(obj, dict):
        raise Bad(f"the {what} is not a JSON object")
    for name, _, presence in table:
        if presence != OPTIONAL and name not in obj:
            raise Bad(f"the {what} has no `{name}`")
    known = {name for name, _, _ in table}
    unknown = sorted(name for name in obj if name not in known)
    if unknown:
        raise Bad(f"the {what} has a member `{unknown[0]}` the format does not define")
    for name, kind, presence in table:
        if name not in obj:
            continue
        value = obj[name]
        ok = presence == NULLABLE if value is None else holds(kind, value)
        if not ok:
            null = " or null" if presence == NULLABLE else ""
            raise Bad(f"the {what}'s `{name}` is not {DESCRIBED[kind]}{null}")


def check_integers(value, what, path=""):
    """Every number in `value` is a whole number of size below 2^53; the first that is not,
    depth first with members by name, is named by its path."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if not (isinstance(value, int) and -LIMIT < value < LIMIT):
            raise Bad(
                f"the {what}'s `{path}` is not a whole number between -(2^53 - 1) and 2^53 - 1"
            )
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_integers(item, what, f"{path}[{i}]")
    elif isinstance(value, dict):
        for name in sorted(value):
            check_integers(value[name], what, f"{path}.{name}" if path else name)


def canonical(line, what, table):
    """Parses a header, checkpoint or seal line, checks the members `table` lists and their
    types, and insists the line is byte for byte the RFC 8785 form of what it holds."""
    try:
        obj = parse_json(line)
    except ValueError as e:
        raise Bad(f"not a valid {what} line: {e}") from None
    check_members(obj, what, table)
    try:
        again = jcs(obj)
    except UnicodeEncodeError:
        again = None
    if again != line:
        raise Bad(f"the {what} line is not in its canonical form (RFC 8785): it was edited")
    return obj


def entry_form(raw, entry):
    """What the format promises of an entry whose hash holds: exactly its members, each of its
    type, whole numbers below 2^53, and no other spelling than its canonical bytes."""
    check_members(entry, "entry", ENTRY_MEMBERS)
    check_integers(entry, "entry")
    try:
        again = jcs(entry)
    except UnicodeEncodeError:
        again = None
    if again != raw:
        raise Bad("the entry is not in its canonical form (RFC 8785): it was edited")


def line_type(line):
    """The `type` of a line that is a JSON object with a string `type`; otherwise None."""
    try:
        obj = parse_json(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("type"), str):
        return obj["type"]
    return None


def canonical_time(text):
    """Whether `text` is a valid UTC time in the one spelling killswitch writes:
    YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    match = TIME.fullmatch(text)
    if not match:
        return False
    try:
        datetime(*(int(part) for part in match.groups()))
    except ValueError:
        return False
    return True


def ending(last_seq):
    """Where a run of entries ends, in words."""
    return "no entry" if last_seq is None else f"entry {last_seq}"


def start_differs(sealed, held):
    """The seal's first entry against the file's (the header's first_seq, which the entries
    were held to), in words."""
    if sealed is not None and (held is None or sealed < held):
        where = "the file holds none" if held is None else f"the file starts at entry {held}"
        return f"the first entry the seal announces, entry {sealed}, is missing: {where}"
    if sealed is not None:
        return (
            f"the seal announces entry {sealed} as the first, but the file starts at entry "
            f"{held}: entries were added before it"
        )
    return f"the seal announces no entries, but the file starts at {ending(held)}: entries were added"


def genesis(chain):
    return hashlib.sha256(GENESIS_PREFIX + chain.encode("utf-8")).digest()


class Keys:
    def __init__(self, raw_keys):
        self.by_id = {key_id(raw): raw for raw in raw_keys}

    def verify(self, kid, message, signature_text, what):
        raw = self.by_id.get(kid)
        if raw is None:
            raise Bad(f"{what} signed by key {kid}, which is not among the public keys given")
        signature = strict_base64(signature_text)
        if signature is None or len(signature) != 64:
            raise Bad(f"{what}'s signature is not 64 base64-encoded bytes")
        if not ed25519_verify(raw, message, signature):
            raise Bad(f"{what}'s signature does not verify with key {kid}: it was changed")


# --------------------------------------------------------------------------------------------
# Witnesses (section 5, "Witnesses")
# --------------------------------------------------------------------------------------------

WITNESS_MEMBERS = ["type", "chain", "seq", "hash", "time", "key_id", "signature"]
KEY_ID = re.compile(r"[0-9a-f]{16}")


class WitnessError(Exception):
    pass


class _Members(list):
    """An object's members as written, in order, a repeated name kept."""


def parse_witness(text):
    """A witness (or a checkpoint line) from a witness file's text, checked member by member;
    WitnessError says what is wrong, in the words `killswitch audit verify` uses."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=_Members,
            parse_constant=_no_constants,
            parse_float=_double,
            parse_int=_integer,
        )
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # no lone surrogate
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        raise WitnessError("the witness is not valid JSON") from None
    if not isinstance(value, _Members):
        raise WitnessError("the witness is not a JSON object")
    seen = set()
    for name, _ in value:
        if name in seen:
            raise WitnessError(f"the witness has the member `{name}` twice")
        seen.add(name)
    witness = dict(value)
    for name in WITNESS_MEMBERS:
        if name not in witness:
            raise WitnessError(f"the witness has no `{name}`")
    unknown = sorted(name for name in witness if name not in WITNESS_MEMBERS)
    if unknown:
        raise WitnessError(f"the witness has a member `{unknown[0]}` a witness does not have")

    def text_matching(name, test):
        value = witness[name]
        return isinstance(value, str) and bool(test(value))

    signature = witness["signature"]
    signature = strict_base64(signature) if isinstance(signature, str) else None
    seq = witness["seq"]
    checks = [
        ("type", witness["type"] in ("witness", "checkpoint"), "`witness` or `checkpoint`"),
        ("chain", isinstance(witness["chain"], str), "a string"),
        ("seq", is_count(seq) and seq >= 1, "a whole number from 1 to 2^53 - 1"),
        ("hash", text_matching("hash", HEX64.fullmatch), "64 lowercase hex digits"),
        ("time", text_matching("time", canonical_time), DESCRIBED[TIMESTAMP]),
        ("key_id", text_matching("key_id", KEY_ID.fullmatch), "16 lowercase hex digits"),
        (
            "signature",
            signature is not None and len(signature) == 64,
            "64 bytes in standard base64",
        ),
    ]
    for name, holds_, described in checks:
        if not holds_:
            raise WitnessError(f"the witness's `{name}` is not {described}")
    return witness


def check_witness_signature(keys, witness):
    """The witness is signed, over the checkpoint message of its chain, seq, hash and time, by
    one of the keys given."""
    seq, time, kid = witness["seq"], witness["time"], witness["key_id"]
    raw = keys.by_id.get(kid)
    if raw is None:
        raise Bad(
            f"the witness of entry {seq} issued {time} is signed with key {kid}, "
            "which is not among the public keys given"
        )
    message = jcs(
        {
            "chain": witness["chain"],
            "hash": witness["hash"],
            "seq": seq,
            "time": time,
            "type": CHECKPOINT_TYPE,
        }
    )
    if not ed25519_verify(raw, message, strict_base64(witness["signature"])):
        raise Bad(
            f"the witness of entry {seq} issued {time} does not verify with key {kid}: "
            "it is forged or was changed"
        )


class Verifier:
    def __init__(self, keys, expected_chain, witnesses=()):
        self.keys = keys
        self.expected_chain = expected_chain
        self.witnesses = list(witnesses)
        self.awaited = []  # witnesses of entries inside the header's range, by seq, not yet met
        self.beyond = []  # witnesses of entries outside it, by seq
        self.header = None
        self.header_sha256 = None
        self.prev = None  # 32 bytes the next entry must chain from
        self.next_seq = None
        self.last = None  # (seq, hash bytes) of the last entry read
        self.pending = []  # checkpoint seqs announced and not yet seen, in order
        self.entries = 0
        self.checkpoints = 0

    # Step 2: the header.
    def read_header(self, line):
        if line.startswith(b"\xef\xbb\xbf"):
            raise Bad(
                "the file starts with a byte-order mark: an export is UTF-8 without one "
                "(an editor saved it again)"
            )
        if line.startswith(ENTRY_PREFIX) or line_type(line) != "header":
            raise Bad("the first line is not the export header: lines were removed from the start")
        header = canonical(line, "header", HEADER_MEMBERS)
        if header["key_id"] not in self.keys.by_id:
            raise Bad(
                f"the export is signed with key {header['key_id']}, "
                "which is not among the public keys given"
            )
        if "signature" not in header:
            raise Bad("the header has no signature")
        unsigned = {k: v for k, v in header.items() if k != "signature"}
        self.keys.verify(header["key_id"], jcs(unsigned), header["signature"], "the header")
        if header["format"] != FORMAT:
            raise Bad(f"the format is `{header['format']}`, not `{FORMAT}`")
        if header["version"] != VERSION:
            raise Bad(f"format version {header['version']} is not supported")
        if self.expected_chain is not None and header["chain"] != self.expected_chain:
            raise Bad(
                f"this is an export of customer `{header['chain']}`, "
                f"not of `{self.expected_chain}`"
            )
        first, last, prev = header["first_seq"], header["last_seq"], header["prev_hash"]
        if prev is not None and first is not None and last is not None and 1 <= first <= last:
            if not HEX64.fullmatch(prev):
                raise Bad("prev_hash is not 64 lowercase hex digits")
            self.prev = bytes.fromhex(prev)
            if first == 1 and self.prev != genesis(header["chain"]):
                raise Bad(f"prev_hash is not the genesis value of chain `{header['chain']}`")
        elif not (prev is None and first is None and last is None):
            raise Bad("first_seq, last_seq and prev_hash disagree")
        seqs = header["checkpoint_seqs"]
        in_order = all(a <= b for a, b in zip(seqs, seqs[1:]))
        in_range = all(first is not None and first <= s <= last for s in seqs)
        if not (in_order and in_range):
            raise Bad("checkpoint_seqs are not in order inside the exported range")
        # Witnesses, in the order given: signed by a key given, of this export's chain.
        for witness in self.witnesses:
            check_witness_signature(self.keys, witness)
            if witness["chain"] != header["chain"]:
                raise Bad(
                    f"the witness of entry {witness['seq']} issued {witness['time']} is of chain "
                    f"`{witness['chain']}`, but this is an export of `{header['chain']}`"
                )
        for witness in sorted(self.witnesses, key=lambda w: w["seq"]):
            held = first is not None and first <= witness["seq"] <= last
            (self.awaited if held else self.beyond).append(witness)
        self.header = header
        self.header_sha256 = hashlib.sha256(line).hexdigest()
        self.pending = list(seqs)
        self.next_seq = first

    def owed_checkpoint(self):
        if self.last is not None and self.pending and self.pending[0] == self.last[0]:
            return self.last[0]
        return None

    # Step 3: an entry line.
    def entry(self, line):
        owed = self.owed_checkpoint()
        if owed is not None:
            raise Bad(f"the signed checkpoint for entry {owed} should be here: it was removed")
        size = len(line)
        hash_at = size - len(ENTRY_SUFFIX) - 64
        layout = (
            size > len(ENTRY_PREFIX) + len(HASH_INFIX) + 64 + len(ENTRY_SUFFIX)
            and line.endswith(ENTRY_SUFFIX)
            and line[hash_at - len(HASH_INFIX) : hash_at] == HASH_INFIX
        )
        if not layout:
            raise Bad('not an entry line of the form {"entry":…,"hash":"…","type":"entry"}')
        raw = line[len(ENTRY_PREFIX) : hash_at - len(HASH_INFIX)]
        stated_text = line[hash_at : hash_at + 64].decode("latin-1")
        if not HEX64.fullmatch(stated_text):
            raise Bad("the entry's hash is not 64 lowercase hex digits")
        try:
            entry = parse_json(raw)
        except UnicodeDecodeError:
            raise Bad("the entry is not UTF-8") from None
        except ValueError:
            raise Bad("the entry is not valid JSON") from None
        link_ok = (
            isinstance(entry, dict)
            and is_u64(entry.get("v"), 32)
            and is_str(entry.get("chain"))
            and is_u64(entry.get("seq"))
            and is_str(entry.get("time"))
            and is_str(entry.get("prev_hash"))
            and isinstance(entry.get("event"), dict)
            and is_str(entry["event"].get("type"))
        )
        if not link_ok:
            raise Bad(
                "the entry is not a valid audit entry: an object with v, chain, seq, time, "
                "prev_hash and an event with a type"
            )
        if not HEX64.fullmatch(entry["prev_hash"]):
            raise Bad("the entry's prev_hash is not 64 lowercase hex digits")
        own_prev = bytes.fromhex(entry["prev_hash"])
        stated = bytes.fromhex(stated_text)
        if hashlib.sha256(own_prev + raw).digest() != stated:
            raise Bad("the entry's content does not match its hash: it was changed")
        entry_form(raw, entry)
        if entry["v"] != ENTRY_FORMAT_VERSION:
            raise Bad(f"the entry has unsupported format version {entry['v']}")
        if entry["chain"] != self.header["chain"]:
            raise Bad(
                f"the entry belongs to chain `{entry['chain']}`, not `{self.header['chain']}`: "
                "it comes from another export"
            )
        expected = self.next_seq
        if expected is None:
            raise Bad("the header says this export holds no entries")
        if self.header["last_seq"] is not None and expected > self.header["last_seq"]:
            raise Bad(f"an entry after entry {expected - 1}, the last the header declares")
        if entry["seq"] != expected:
            if entry["seq"] > expected:
                raise Bad(f"entry {expected} is missing (this line holds entry {entry['seq']})")
            raise Bad(
                f"entry {entry['seq']} appears where entry {expected} belongs: "
                "lines were moved or repeated"
            )
        if own_prev != self.prev:
            if self.entries == 0:
                raise Bad("the first entry does not chain from the header's prev_hash")
            raise Bad(f"the entry does not chain from entry {expected - 1}")
        while self.awaited and self.awaited[0]["seq"] == expected:
            witness = self.awaited.pop(0)
            if witness["hash"] != stated_text:
                raise Bad(
                    f"entry {expected} has hash {stated_text} but the witness issued "
                    f"{witness['time']} says {witness['hash']}: the log was rewritten after the "
                    "witness"
                )
        self.prev = stated
        self.last = (expected, stated)
        self.next_seq = expected + 1
        self.entries += 1

    # Step 4: a checkpoint line.
    def checkpoint(self, line):
        cp = canonical(line, "checkpoint", CHECKPOINT_MEMBERS)
        if self.last is None:
            raise Bad("a checkpoint before any entry")
        seq, last_hash = self.last
        if cp["seq"] != seq:
            raise Bad(
                f"a checkpoint for entry {cp['seq']} right after entry {seq}: "
                "lines were removed or moved"
            )
        if self.owed_checkpoint() != seq:
            raise Bad(
                f"a checkpoint for entry {seq} where the header announces none: "
                "it was added or repeated"
            )
        if cp["chain"] != self.header["chain"]:
            raise Bad(f"the checkpoint names chain `{cp['chain']}`")
        if not HEX64.fullmatch(cp["hash"]):
            raise Bad("checkpoint hash is not 64 hex digits")
        if not canonical_time(cp["time"]):
            raise Bad("checkpoint time is not in its canonical form")
        signature = strict_base64(cp["signature"])
        if signature is None or len(signature) != 64:
            raise Bad("checkpoint signature is not 64 base64-encoded bytes")
        if bytes.fromhex(cp["hash"]) != last_hash:
            raise Bad(f"the checkpoint's hash differs from entry {seq}'s")
        raw = self.keys.by_id.get(cp["key_id"])
        if raw is None:
            raise Bad(f"checkpoint signed by unknown key {cp['key_id']}")
        message = jcs(
            {
                "chain": cp["chain"],
                "hash": cp["hash"],
                "seq": cp["seq"],
                "time": cp["time"],
                "type": CHECKPOINT_TYPE,
            }
        )
        if not ed25519_verify(raw, message, signature):
            raise Bad(f"checkpoint signature does not verify with key {cp['key_id']}")
        self.pending.pop(0)
        self.checkpoints += 1

    # Step 5: the seal.
    def seal(self, line):
        owed = self.owed_checkpoint()
        if owed is not None:
            raise Bad(f"the signed checkpoint for entry {owed} should be here: it was removed")
        seal = canonical(line, "seal", SEAL_MEMBERS)
        if "signature" not in seal:
            raise Bad("the seal has no signature")
        unsigned = {k: v for k, v in seal.items() if k != "signature"}
        self.keys.verify(seal["key_id"], jcs(unsigned), seal["signature"], "the seal")
        header = self.header
        if (
            seal["type"] != "seal"
            or seal["chain"] != header["chain"]
            or seal["key_id"] != header["key_id"]
        ):
            raise Bad("the seal is for another export")
        if seal["header_sha256"] != self.header_sha256:
            raise Bad("the seal was made for another header: it comes from another export")
        if seal["first_seq"] != header["first_seq"]:
            raise Bad(start_differs(seal["first_seq"], header["first_seq"]))
        last_seq = self.last[0] if self.last else None
        if seal["entries"] != self.entries or seal["last_seq"] != last_seq:
            if self.entries < seal["entries"]:
                happened = "entries were removed"
            elif self.entries > seal["entries"]:
                happened = "entries were added"
            else:
                happened = "entries were replaced"
            raise Bad(
                f"the seal signs {seal['entries']} entries ending at {ending(seal['last_seq'])}, "
                f"the file holds {self.entries} ending at {ending(last_seq)}: {happened}"
            )
        if last_seq != header["last_seq"]:
            raise Bad("the entries end before the header's last_seq")
        if seal["last_hash"] != (self.last[1].hex() if self.last else None):
            raise Bad("the seal's last_hash differs from the last entry's hash")
        if self.pending:
            raise Bad(
                f"the header announces a checkpoint for entry {self.pending[0]} "
                "that is not in the file"
            )
        unchecked = self.beyond or self.awaited
        if unchecked:
            witness = unchecked[0]
            if header["first_seq"] is None:
                holding = "it holds no entries"
            else:
                holding = f"it holds entries {header['first_seq']} to {header['last_seq']}"
            raise Bad(
                f"the witness issued {witness['time']} is of entry {witness['seq']}, which this "
                f"export does not hold ({holding}): export a period that includes entry "
                f"{witness['seq']}"
            )


def verify(stream, keys, expected_chain, witnesses=()):
    """Reads the export from a binary stream. Returns (None, verifier) when intact, or
    (line number, reason) for the first line that cannot be trusted."""
    state = Verifier(keys, expected_chain, witnesses)
    number = 0
    started = sealed = False
    for data in stream:
        number += 1
        try:
            # Step 1: framing.
            if sealed:
                raise Bad("a line follows the seal: it was added after the export was signed")
            if not data.endswith(b"\n"):
                raise Bad("the line has no newline at its end: the file was cut off")
            line = data[:-1]
            if not nests_within_limit(line):
                raise Bad(TOO_DEEP)
            if not started:
                state.read_header(line)
                started = True
            elif line.startswith(ENTRY_PREFIX):
                state.entry(line)
            else:
                kind = line_type(line)
                if kind == "checkpoint":
                    state.checkpoint(line)
                elif kind == "seal":
                    state.seal(line)
                    sealed = True
                elif kind == "header":
                    raise Bad("a second header: lines from another export were inserted")
                elif kind is not None:
                    raise Bad(f"unknown line type `{kind}`")
                else:
                    raise Bad("the line is not an export line (JSON object with a `type`)")
        except Bad as bad:
            return number, str(bad)
        except RecursionError:
            # Not reached past the depth check; should any value still be too deep to walk,
            # it is the line's fault, not a reason to stop without a verdict.
            return number, TOO_DEEP
    # Step 6: the end of the file.
    if not started:
        return 1, "the file is empty; an export starts with its header"
    if not sealed:
        return number + 1, "the export ends before its seal: lines were cut off the end"
    return None, state


def describe(state):
    header = state.header
    if header["first_seq"] is not None:
        extent = f"entries {header['first_seq']} to {header['last_seq']}"
    else:
        extent = "no entries"
    start = "the beginning" if header["from"] is None else header["from"]
    end = header["exported_at"] if header["to"] is None else header["to"]
    period = f"{start} to {end}"
    witnessed = f", agrees with {len(state.witnesses)} witness(es)" if state.witnesses else ""
    return (
        f"intact: {header['chain']} ({header['customer']}), {extent} "
        f"({state.entries} entries, {state.checkpoints} signed checkpoint(s)), "
        f"period {period}, sealed by key {header['key_id']}{witnessed}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Verify a killswitch JSON Lines audit export (docs/audit-format.md)."
    )
    parser.add_argument("export", help="the export file, or - for standard input")
    parser.add_argument(
        "--public-key",
        action="append",
        required=True,
        metavar="KEYFILE",
        help="a public key to trust (PEM, JSON of `audit public-key --json`, or base64); "
        "repeat for keys used before a rotation",
    )
    parser.add_argument("--customer", metavar="SLUG", help="fail unless the export is of SLUG")
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="FILE",
        help="a witness the export must agree with (from a notice, or a checkpoint line of an "
        "earlier export); repeat for several",
    )
    args = parser.parse_args(argv)

    raw_keys = []
    for path in args.public_key:
        try:
            with open(path, encoding="utf-8") as f:
                raw_keys.append(parse_public_key(f.read()))
        except (OSError, UnicodeDecodeError, KeyError_) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
    keys = Keys(raw_keys)
    witnesses = []
    for path in args.witness:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            print(f"cannot read witness {path}: {e}", file=sys.stderr)
            return 2
        try:
            witnesses.append(parse_witness(data.decode("utf-8")))
        except UnicodeDecodeError:
            print(f"{path}: the witness is not UTF-8 text", file=sys.stderr)
            return 2
        except WitnessError as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
    try:
        if args.export == "-":
            result = verify(sys.stdin.buffer, keys, args.customer, witnesses)
        else:
            with open(args.export, "rb") as f:
                result = verify(f, keys, args.customer, witnesses)
    except OSError as e:
        print(f"cannot read {args.export}: {e}", file=sys.stderr)
        return 2
    line, outcome = result
    if line is None:
        print(describe(outcome))
        return 0
    print(f"NOT INTACT: line {line}: {outcome}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
