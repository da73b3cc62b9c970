package evidence

// readme is the README.md of every bundle: instructions for the auditor.
const readme = `# Evidence bundle

This directory is an evidence bundle exported from a linegate ledger: the
records that were asked for (see manifest.json for the selection), each with
what is needed to check it without access to the system that produced it.

## What is here

- log.vkey: the public key of the log (a signed-note verifier key; its name
  is the log's origin). Compare it with the key you were given beforehand:
  a bundle is only as good as the key you check it with.
- checkpoint: the log's signed tree head (c2sp.org/tlog-checkpoint) that
  every proof in the bundle is against.
- records/NNNNNNNNNNNN/: one directory a record, named by its index in the log.
  - leaf: the log entry: version, kind, time, channel, retention class and
    the salted commitment SHA-256(nonce || payload). It holds no personal data.
  - nonce: the salt of the commitment.
  - meta.json and body: the payload, decrypted (the operator's store keeps
    it encrypted; the commitment is over the plaintext). The payload is the
    4-byte big-endian length of meta.json, then meta.json, then body. For a webhook, body is
    the request body exactly as LINE sent it, and meta.json holds the
    request headers as received, x-line-signature among them.
  - inclusion.tlog-proof: a c2sp.org/tlog-proof that the leaf is in the tree
    of the checkpoint.
  - record.json: a summary for people (kind, time, channel, commitment, the
    x-line-signature of a webhook, the x-line-request-id of each call to
    LINE's API, which LINE support can trace).
  - content, for a media record (the content of an image, video, audio or
    file message): the content as LINE served it. The record's body is
    then its JSON (message id, type, size, SHA-256 of the content, where
    it was stored), and the payload is the body framed as the 4-byte
    big-endian length of that JSON, the JSON, then the content (for
    content kept in object storage, the content is not part of the
    payload, and is checked against the SHA-256 alone).
- exports.json and exports/, when the export was asked for a review
  platform (RSMF, EML or JSON lines): each exported file with its SHA-256
  and the records above it was made from; exports/undecodable.txt lists
  the records whose body could not be decoded.
- anchors/: the daily anchors of the log (NAME.checkpoint) with the proofs
  that each extends the one before (NAME.consistency), and
  checkpoint.consistency, the proof that the bundle's checkpoint extends the
  last anchor.

## How to check it

    linegate verify-bundle -vkey YOUR-COPY-OF-log.vkey DIR

checks the checkpoint's signature, then for every record that the payload
and nonce match the leaf's commitment and that the inclusion proof leads to
the checkpoint's root, and that the anchors are consistent up to the
checkpoint, that every media content has the SHA-256 its record states,
and that a record's directory holds nothing but its own files. With an
export, it rebuilds every exported file from the verified records and
requires the bundle's to be the same byte for byte, refuses any other file
under exports/, and fails when manifest.json names an export format that
the bundle does not hold. It names the first record or file that fails.

Without linegate: for each record, compute SHA-256(nonce || len(meta.json)
as 4 big-endian bytes || meta.json || body) and compare it with the last 32
bytes of leaf; compute the RFC 6962 leaf hash SHA-256(0x00 || leaf) and run
the inclusion proof (RFC 6962 section 2.1.1) to the root hash on the third
line of checkpoint; verify checkpoint's signature with log.vkey
(golang.org/x/mod/sumdb/note, Ed25519).

To confirm that a webhook came from LINE, recompute its signature with the
channel secret: Base64(HMAC-SHA256(channel secret, body)) must equal the
x-line-signature in meta.json. The body file holds the exact bytes received.
`
