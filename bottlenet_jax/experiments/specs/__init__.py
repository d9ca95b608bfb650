"""The studies' specs: each module declares `TITLE`, `runs(cfg, seed, workdir)` (name -> train config),
`methods(cfg)` (runner.Method: family and grid), `describe(cfg)` (its header lines) and
`tables(cfg, validation rows, test rows)` (its own tables); experiments/runner.py does the rest."""
