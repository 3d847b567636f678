"""Celery's remote control, as every worker of ours takes it: only ``ping``.

Anyone who can write to the broker can send a remote-control command, unsigned: shutdown,
cancel_consumer, add_consumer, pool_grow, revoke(terminate=True) would let them stop an agent or
the central worker, re-point one at another host's queue, or kill the command it runs. Nothing
of ours needs them (cancel works by the operator's mark, which the runner polls); ping lets
operators and tests see who is there.

No Celery here: each side hands over its worker's own registry (celery.worker.control.Panel.data).
"""

import logging

#: The only remote-control commands obeyed.
CONTROL_COMMANDS = frozenset({"ping"})

E_CONTROL = "remote control command {name!r} refused: this worker obeys only {allowed}"


def _refused(name: str, logger: logging.Logger):
    text = E_CONTROL.format(name=name, allowed=", ".join(sorted(CONTROL_COMMANDS)))

    def refused(state, **_):
        logger.warning(text)
        return {"error": text}

    return refused


def obey_only_harmless(panel: dict, logger: logging.Logger) -> None:
    """Replace every command in ``panel`` (a worker's control registry) but CONTROL_COMMANDS
    by one that refuses and says so. The worker hands this registry to its control consumer."""
    for name in set(panel) - CONTROL_COMMANDS:
        panel[name] = _refused(name, logger)
