"""What any front-end shows of jobs, from plain dicts (the API's JSON): no Django, no Celery."""
