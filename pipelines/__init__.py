"""The pipeline stages: files in, files out; the only code that knows the run-folder layout."""
