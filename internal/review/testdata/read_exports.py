#!/usr/bin/env python3
"""Reads exported EML and RSMF files with Python's email package, an
independent parser, and prints what it found as JSON: per file, the
decoded headers, the text body, and each attachment's name, type, size
and SHA-256; for an .rsmf also the files of its rsmf.zip and the manifest.

Usage: read_exports.py FILE...
"""
import email
import email.policy
import hashlib
import io
import json
import sys
import zipfile


def read(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    out = {
        "subject": str(msg["Subject"]),
        "from": str(msg["From"]),
        "to": str(msg["To"]),
        "date": str(msg["Date"]),
        "headers": {k: str(v) for k, v in msg.items() if k.lower().startswith(("x-rsmf-", "x-linegate-"))},
        "defects": [type(d).__name__ for d in msg.defects],
        "attachments": [],
    }
    body = msg.get_body(preferencelist=("plain",))
    out["text"] = body.get_content() if body is not None else None
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        att = {
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if part.get_filename() == "rsmf.zip":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                att["zip"] = {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()}
                att["manifest"] = json.loads(z.read("rsmf_manifest.json"))
        out["attachments"].append(att)
    return out


if __name__ == "__main__":
    json.dump({p: read(p) for p in sys.argv[1:]}, sys.stdout, ensure_ascii=False)
