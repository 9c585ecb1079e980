"""Release tooling: image tags, exported requirements, the staged Helm install.

Run as ``python -m airflow_project.release <command>``; see ``cli.py``. Only the
standard library and PyYAML are imported, so it works before ``uv sync`` finishes
and inside CI images that carry nothing else.
"""
