"""Release tooling: image tags, exported requirements, the staged Helm install.

Run as ``python -m airflow_project.release <command>``; see ``cli.py``. It imports the
standard library and PyYAML only, and runs in the project's environment: the Makefile's
targets call it with ``.venv/bin/python`` after ``make venv``, never with a runner's own
``python3`` (which may lack PyYAML).
"""
