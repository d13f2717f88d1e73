-- MLflow's backend store lives beside Airflow's metadata in the same Postgres server.
CREATE DATABASE mlflow;
