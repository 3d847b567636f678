"""Who may do what on which hosts (issue 16): the actor behind every request, and grants."""
