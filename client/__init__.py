"""What the operator's tools share that needs no Django: rendering of jobs from plain dicts (the
API's JSON), live output, the thin client."""
