"""The reading workflow's web pages (``/ui``): server-rendered HTML (Jinja2 templates in
``templates/``), our own small script and stylesheet in ``static/``, no front-end framework.

Every page needs the same login as the viewer (a browser without a session is sent to
``/login``), sees only the caller's facilities, and links to the OHIF viewer at ``/``.
Each part of the workflow adds its pages as a router of its own in ``routes.ROUTERS``.
"""
