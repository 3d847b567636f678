"""Jobs: a command (later a collection or a deploy) on a set of hosts, one host task per host."""
