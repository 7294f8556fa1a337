"""devgrid-backfill: import historical deployments into DevGrid as event-deploy events."""

__version__ = "0.1.0"
