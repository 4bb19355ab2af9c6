"""The playground: the bot against the bundled Slack emulator, shown in a browser (being built)."""
