"""The harness: configs, experiments, runner, results store, provenance, telemetry and the CLI."""
