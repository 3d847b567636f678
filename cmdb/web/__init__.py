"""Web pages beyond the admin: the fleet dashboard and the live job page."""
