"""`python -m airflow_project.serving [flags]`: the predictor, as `mlops serve` (see `serving.cli`)."""

import sys

from airflow_project.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
