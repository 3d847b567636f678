"""Putting things on hosts: the agent itself (service unit) and the local demo fleet."""
