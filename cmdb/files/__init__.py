"""The server's side of push and fetch: uploads, fetched copies, blobs in the broker."""
