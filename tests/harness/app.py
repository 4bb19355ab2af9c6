"""Application fixtures: settings, database, Slack emulator wiring."""
