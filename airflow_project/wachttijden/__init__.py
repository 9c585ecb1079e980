"""Domain logic for the hospital waiting-time model.

Nothing in this package imports Airflow, MLflow or the rest of the project:
the DAGs, the CLI, the serving code and the tests all call these functions.
"""
