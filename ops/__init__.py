"""The operations view of the job (batch_monitor.py, and what main.py reports after a run): the health
figures of `check` and `status` (monitoring), the HTML dashboard (dashboard, templates/), the consistency
audit (audit), the Prometheus textfile (metrics), the alert mail (alerts), and where a read-only command
may write its output (output_files). Pure cores apart from the few reads and writes they make."""
