"""m5flow core: everything the Lambda handlers share, with no AWS calls in its math.

Modules by concern: `schema` (the M5 input files), `features` (column-wise features on the
wide sales matrix), `shards` (training/validation/inference tables and the manifest),
`naming` (run and job names), `notifications` (the events m5flow emits), `jobs` (SageMaker
request bodies), `forecast` (turning predictions into a submission), `storage` (S3 or disk),
and `stages` (one function per pipeline step, called by the thin handlers).
"""

__version__ = "0.1.0"
