"""The base layer every stage may use: errors, the registry, atomic writes, the stage cache, progress output,
runtime sessions (the runtime seam), the preprocessing contract and the device a run trains on.

Nothing here imports a stage (data, models, transfer, compress, evaluate, package); import-linter checks it.
Importing this package stays cheap: torch and the runtimes are imported inside the functions that use them.
"""
