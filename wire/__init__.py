"""The wire contract between the server and its agents: what travels through the broker.

Task and queue names (``names``), the messages and results with their version (``messages``),
the signature on what agents run (``signing``), the Celery settings both sides share
(``transport``), the chunked blob store files travel by (``blobs``) and the archive checks both
ends of a push make (``archive``). Imported by both sides, so it holds no Celery app, no Django
and reads no environment: each side's settings module passes its values in.
"""
