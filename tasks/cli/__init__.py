"""doit wiring: task dicts, `doit info` metadata, the stale/plan/push commands, the reporter."""
