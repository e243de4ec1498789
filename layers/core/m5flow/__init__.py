"""m5flow core: everything the Lambda handlers share, with no AWS calls in its math.

Modules by concern:
- the upload: `csvinput` (decoding and reading CSVs), `schema` (the three M5 files, checked),
  `calendar_prices` (calendar and prices against the sales), `overrides` (a dataset's
  m5flow.json);
- the models' data: `features` (column-wise features on the wide sales matrix), `shards`
  (training/validation/inference tables), `manifest` (what a run trains, read by every step);
- SageMaker: `hyperparameters` (defaults, overrides, merging), `jobs` (request bodies),
  `instances` (how many hosts a job needs, and of what memory), `images` (the built-in
  XGBoost image per region);
- the results: `forecast` (predictions to a submission), `hierarchy` and `scoring` (the 12
  M5 levels and WRMSSE), `submission` (submission and truth files), `report` and `charts`
  (the HTML report);
- plumbing: `naming` (run, job and S3 key names), `notifications` (the events m5flow emits,
  each with its one-line summary), `storage` (S3 or disk), `exceptions`, `wording` (how a
  message cuts a long value or list);
- `stages`: one function per pipeline step, called by the thin handlers.

Generated data for demos and tests (`m5flow synth`) is not here but in `local/synth.py`:
nothing deployed needs it.
"""
