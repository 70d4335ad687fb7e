"""What profiler and fusion share: file I/O and manifests, errors, column names and roles, CLI
helpers, and the file names of every output folder. Imports neither profiler nor fusion."""
