"""schemathesis hooks for tests/api/test_schemathesis.py (loaded by SCHEMATHESIS_HOOKS).

Generated dispatch requests (commands, collections, pushes, fetches) that name hosts are
pointed at a host no agent serves (and only at it: no groups, no fact filter), so that whatever
else is valid goes all the way through dispatch to the broker (202) and no generated command
ever runs anywhere: its task waits in a queue nobody reads until its reach deadline. Requests
without hosts are left as generated (the validation paths of groups and fact filters).
"""

import os

import schemathesis

#: The agentless host the test creates; see test_schemathesis.FUZZ_HOST.
FUZZ_HOST = os.environ.get("CMDB_FUZZ_HOST", "127.0.1.200")
#: The operations that send work to hosts.
DISPATCHING = {("POST", "/api/jobs/"), ("POST", "/api/jobs/push/"), ("POST", "/api/jobs/fetch/")}


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) not in DISPATCHING:
        return body
    if isinstance(body, dict) and isinstance(body.get("hosts"), list) and body["hosts"]:
        return {**body, "hosts": [FUZZ_HOST], "groups": [], "where": []}
    return body
