"""Hosts: the managed machines, known by IP (their queue name) and hostname."""
