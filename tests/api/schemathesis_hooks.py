"""schemathesis hooks for tests/api/test_schemathesis.py (loaded by SCHEMATHESIS_HOOKS).

Generated dispatch requests (commands, collections, pushes, fetches) that name hosts are
pointed at a host no agent serves (and only at it: no groups, no fact filter), so that whatever
else is valid goes all the way through dispatch to the broker (202) and no generated command
ever runs anywhere: its task waits in a queue nobody reads until its reach deadline. Requests
without hosts are left as generated (the validation paths of groups and fact filters).
"""

import ipaddress
import os

import schemathesis

#: The agentless host the test creates; see test_schemathesis.FUZZ_HOST.
FUZZ_HOST = os.environ.get("CMDB_FUZZ_HOST", "127.0.1.200")
#: The operations that send work to hosts.
DISPATCHING = {("POST", "/api/jobs/"), ("POST", "/api/jobs/push/"), ("POST", "/api/jobs/fetch/")}
#: The operations that write a host's IP: a valid one is made one no agent serves, lest a
#: generated host be a running agent's (the suite's agents are accepted as they come).
WRITING_IPS = {("POST", "/api/hosts/"), ("PATCH", "/api/hosts/{id}/")}
NO_AGENT_IP = "127.0.1.201"


def _is_ipv4(value) -> bool:
    try:
        ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        return False
    return True


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    key = None if operation is None else (operation.method.upper(), operation.path)
    if key in WRITING_IPS and isinstance(body, dict) and _is_ipv4(body.get("ip")):
        return {**body, "ip": NO_AGENT_IP}
    if key not in DISPATCHING:
        return body
    if isinstance(body, dict) and isinstance(body.get("hosts"), list) and body["hosts"]:
        return {**body, "hosts": [FUZZ_HOST], "groups": [], "where": []}
    return body
