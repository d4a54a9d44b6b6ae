"""What every module says of a MongoDB document, once: its Python type, a batch's id, and the largest integer
BSON stores as an Int64."""

from typing import Any

# A document as pymongo returns it and as the job writes it.
Document = dict[str, Any]
# 2**63 - 1: the largest Int64; beyond it a server stores no integer (the job writes a Decimal128).
INT64_MAX = 2**63 - 1
# Case_Distribution_Batch_ID: a non-empty string or an integer (database_checks.task_batch_id checks it).
BatchId = str | int
